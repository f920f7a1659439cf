"""`python -m src.train` as a user runs it: overrides, sweeps, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_one_line_error, cli_in_process, run_cli


@pytest.mark.slow
def test_cli_runs_with_an_override(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "optimizer.lr=0.05", f"paths.cache_dir={cache_dir}",
                   f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/acc", "train/loss"} <= metrics.keys()
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "lr: 0.05" in saved
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert "Test accuracy (running statistics): " in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("data.batch_size=0", ["data.batch_size"]),
        ("optimizer.lr=-0.1", ["optimizer.lr"]),
        ("optimizer.momentum=1.0", ["optimizer.momentum"]),
        ("trainer.max_epochs=0", ["trainer.max_epochs"]),
        ("model.update_state=maybe", ["model.update_state"]),
        ("trainer=tpu", ["trainer/tpu"]),
        ("optimizer.lrr=3", ["optimizer.lrr"]),
        ("model.bn_stats=median", ["model.bn_stats", "median"]),
        ("trainer.log_every_n_steps=0", ["trainer.log_every_n_steps"]),
        ("trainer.log_every_n_steps=-2", ["trainer.log_every_n_steps"]),
        ("ckpt_path=/nonexistent/last.ckpt", ["ckpt_path", "/nonexistent/last.ckpt"]),
        ("trainer.max_epochs=null", ["trainer.max_epochs", "null"]),
        ("model.update_state=null", ["model.update_state"]),
        ("data.batch_size=1e3", ["data.batch_size", "whole number"]),
        ("trainer.devices=0", ["trainer.devices=0"]),  # 2 is DDP now (trainer=ddp_cpu)
        ("callbacks=null", ["override"]),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, override: str, needles: list[str]
) -> None:
    run_dir = tmp_path / "run"
    proc = cli_in_process(override, f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, *needles)
    assert not run_dir.exists()


@pytest.mark.slow
def test_a_key_the_model_does_not_take_is_one_line(tmp_path: Path, cache_dir: Path) -> None:
    """Caught when the model is built, after Hydra made the run directory: nothing else is."""
    run_dir = tmp_path / "run"
    proc = run_cli("+model.foo=1", *TINY, f"paths.cache_dir={cache_dir}",
                   f"hydra.run.dir={run_dir}", timeout=120)  # fmt: skip
    assert_one_line_error(proc, "BNStateModule", "'foo'")
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_multirun_sweep_gives_each_job_its_own_directory(tmp_path: Path, cache_dir: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("--multirun", *TINY, "optimizer.lr=0.01,0.05", f"paths.cache_dir={cache_dir}",
                   f"hydra.sweep.dir={sweep_dir}", "test=false")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, lr in (("0_lr=0.01", "0.01"), ("1_lr=0.05", "0.05")):
        assert f"lr: {lr}" in (sweep_dir / job / ".hydra" / "config.yaml").read_text()
        assert (sweep_dir / job / "metrics.json").is_file()
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()


def test_bad_value_in_a_sweep_fails_before_any_job_runs(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = cli_in_process("--multirun", "optimizer.lr=0.01,-1", f"hydra.sweep.dir={sweep_dir}")
    assert_one_line_error(proc, "optimizer.lr=-1")
    assert not sweep_dir.exists()


def test_gpu_without_cuda_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer=gpu where PyTorch sees no GPU; simulated, so the test holds on GPU machines too."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "run"
    proc = cli_in_process("trainer=gpu", f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, "trainer.accelerator=gpu", "no CUDA GPU")
    assert not run_dir.exists()
