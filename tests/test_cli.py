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


def test_gpu_without_cuda_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer=gpu where PyTorch sees no GPU; simulated, so the test holds on GPU machines too."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "run"
    proc = cli_in_process("trainer=gpu", f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, "trainer.accelerator=gpu", "no CUDA GPU")
    assert not run_dir.exists()
