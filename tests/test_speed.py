"""The speed work: values written in blocks, data resident on the device, the CUDA-graph step
(checked on a CPU with the same sequence run eagerly), and the benchmark itself."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from src.data.datamodule import EpochBatchSampler
from src.errors import ConfigError
from src.model.cuda_graph import CapturedStep, EagerBackend
from tests.conftest import ROOT, compose_config, fit


def test_training_writes_every_iterations_values_in_blocks(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Blocks of 4 iterations: the plot's history and the latest values still hold every one;
    the monitor's values, computed for all layers at once, are each layer's own; and the state
    moves, so the monitor gives no warning (test_module's update_state=false run checks it)."""
    from src.callbacks.bn_state import BatchNormStateMonitor

    seen: list[int] = []

    class Watch(L.Callback):
        def on_step_values(self, trainer, pl_module, records) -> None:
            seen.append(len(records))

    monitor = BatchNormStateMonitor(check_after=3)
    with caplog.at_level(logging.WARNING, logger="src.callbacks.bn_state"):
        _, model, _ = fit(cache_dir, tmp_path, 3, callbacks=[Watch(), monitor],
                          trainer={"log_every_n_steps": 1}, log_block_steps=4,
                          log_block_seconds=3600)  # fmt: skip
    assert not [r for r in caplog.records if "has not changed from its initial" in r.message]
    # 6 iterations an epoch: a block of 4, then the epoch end writes the other 2.
    assert seen == [4, 2] * 3
    assert model.latest["train/loss"] > 0 and model.non_finite is None
    assert model.latest["train/elapsed_s"] == pytest.approx(model.elapsed(), abs=1.0)
    for name, bn in model.net.batch_norms().items():
        assert model.latest[f"{name}/running_mean_avg"] == pytest.approx(
            float(bn.running_mean.mean()), rel=1e-6
        )
        assert model.latest[f"{name}/running_var_avg"] == pytest.approx(
            float(bn.running_var.mean()), rel=1e-6
        )
        assert model.latest[f"{name}/batch_var_ratio"] > 0
        assert model.latest[f"{name}/batch_mean_gap"] >= 0


def test_the_captured_step_trains_exactly_as_the_eager_loop(
    cache_dir: Path, tmp_path: Path, small_fit
) -> None:
    """model.cuda_graph=true on a CPU (outside the CLI) runs its warm-up, capture and replays
    eagerly: weights, state and the loss history must be the plain loop's, bit for bit."""
    _, eager, _ = small_fit
    _, graphed, _ = fit(cache_dir, tmp_path, cuda_graph=True)
    step = graphed.captured_step
    assert step is not None and step.captured and isinstance(step.backend, EagerBackend)
    assert step.backend.replays == 12 - 4  # 3 warm-up steps, 1 capture, then replays
    for (name, a), (_, b) in zip(eager.state_dict().items(), graphed.state_dict().items()):
        assert torch.equal(a, b), name
    assert graphed.global_step == eager.global_step == 12
    assert graphed.latest["train/loss"] == eager.latest["train/loss"]
    # training on the CPU, the data stays on the CPU
    assert small_fit[0].datamodule.train_set.device.type == "cpu"


def test_captured_step_outputs_are_overwritten_in_place() -> None:
    calls = []

    def step(x, y):
        calls.append(1)
        return (x * 2).sum(), {"s": y + 1}

    captured = CapturedStep(step, warmup=1, backend=EagerBackend())
    first = captured(torch.ones(2), torch.zeros(2))  # warm-up
    second = captured(torch.ones(2) * 2, torch.zeros(2))  # capture and run
    third = captured(torch.ones(2) * 3, torch.ones(2))  # replay
    assert float(first[0]) == 4 and float(third[0]) == 12
    assert third[0] is second[0] and torch.equal(third[1]["s"], torch.full((2,), 2.0))


def test_indices_follow_the_data_to_its_device() -> None:
    """The epoch's permutation moves to the data's device once; batches index it there."""
    sampler = EpochBatchSampler(10, 3, True, seed=1, device=torch.device("cpu"))
    plain = EpochBatchSampler(10, 3, True, seed=1)
    assert [b.tolist() for b in sampler] == [b.tolist() for b in plain]
    assert all(b.device.type == "cpu" for b in sampler)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_graph_trains_as_the_eager_loop_on_a_gpu(cache_dir: Path, tmp_path: Path) -> None:
    """Replayed as a real CUDA graph, the step and the rows it writes (loss and state) match
    the eager loop's (to float tolerance: cuDNN may pick other algorithms in a graph); the data
    stays on the GPU."""
    from src.model.cuda_graph import CudaGraphBackend

    gpu = {"accelerator": "gpu"}
    _, eager, _ = fit(cache_dir, tmp_path / "a", trainer=gpu)
    _, graphed, dm = fit(cache_dir, tmp_path / "b", trainer=gpu, cuda_graph=True)
    assert dm.train_set.device.type == "cuda"
    assert isinstance(graphed.captured_step.backend, CudaGraphBackend)
    assert graphed.captured_step.captured and graphed.global_step == eager.global_step == 12
    for (name, a), (_, b) in zip(eager.state_dict().items(), graphed.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), name
    assert graphed.latest["train/loss"] == pytest.approx(eager.latest["train/loss"], rel=1e-3)


@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_dry_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py's sequence, on the CPU and tiny, so that it cannot rot."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in steps] == ["ok"] * len(steps) and len(steps) == 5
    figures = {s["name"]: s["figures"] for s in steps}
    assert "test/acc" in figures["trainer=gpu, end to end"]
    assert "Lightning's floor (bare module)" in figures["benchmark, host overhead"]
    assert "gpu_check" not in proc.stdout.splitlines()[-1] and "| step |" in proc.stdout


def test_cuda_graph_with_a_schedule_or_ddp_is_refused(tmp_path: Path) -> None:
    from src.config.rules import _check_cuda_graph

    for extra, words in (
        (["trainer=ddp_cpu"], "trainer"),
        (["trainer=cpu"], "trainer"),
        (["scheduler=cosine"], "scheduler=none"),
        (["trainer.precision=16-mixed"], "GradScaler"),
    ):
        cfg = compose_config(["model.cuda_graph=true", *extra], tmp_path, tmp_path)
        with pytest.raises(ConfigError, match=r"model\.cuda_graph=true") as err:
            _check_cuda_graph(cfg)
        assert (words if torch.cuda.is_available() else "no CUDA GPU") in str(err.value)


def _bench(tmp_path: Path, cache_dir: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--per-class", "20", "10", "--epochs", "1",
         "--batch-size", "32", "--reps", "1", "--cache-dir", str(cache_dir), "--json", str(out),
         *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_benchmark_times_both_loops_and_prints_its_table(tmp_path: Path, cache_dir: Path) -> None:
    """The README's benchmark on a tiny setting, so it cannot rot: both contenders (and a
    variant) train in one process and the table and JSON carry their figures."""
    result, stdout = _bench(tmp_path, cache_dir, "--skip-whole",
                            "--variant", "no monitor=~callbacks.bn_state_monitor")  # fmt: skip
    loop = result["loop"]
    assert set(loop) == {"plain loop", "Lightning's floor (bare module)", "project (default)",
                         "project, no monitor", "expert plain, bf16",
                         "expert plain, channels_last", "expert plain, bf16 + channels_last",
                         "project, experiment=fast"}  # fmt: skip
    assert loop["plain loop"]["ratio"] == 1.0
    assert all(r["ms_per_iter"] > 0 and r["images_per_s"] > 0 for r in loop.values())
    assert "| project (default) |" in stdout and "ratio to plain" in stdout
    assert result["whole"] == {}


@pytest.mark.slow
def test_benchmark_whole_runs_compare_the_two_commands(tmp_path: Path, cache_dir: Path) -> None:
    """The whole-run half: `python -m src.train` and the plain script, wall time, fixed cost
    and each process's own peak memory."""
    result, stdout = _bench(tmp_path, cache_dir, "--skip-loop")
    whole = result["whole"]
    assert whole["project"]["wall_s"] > whole["project"]["fixed_s"] > 0
    assert whole["plain"]["wall_s"] > whole["plain"]["fixed_s"] > 0
    # Each its own peak (not the benchmark's): the plain script imports no Lightning.
    assert 50 < whole["plain"]["peak_rss_mib"] < whole["project"]["peak_rss_mib"]
    assert "| python -m src.train |" in stdout and result["loop"] == {}


def test_a_bad_benchmark_override_is_one_line_before_any_timing(
    cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """Was a traceback, and for a variant only after the other contenders had run (minutes)."""
    from benchmarks import bench, profile_loop

    for main, argv in ((bench.main, ["--variant", "bad=trainer.precision=bf17"]),
                       (profile_loop.main, ["trainer.precision=bf17"])):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main([*argv, "--cache-dir", str(cache_dir)])
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: trainer.precision=bf17 must be 32-true (the example's single precision), "
            "bf16-mixed or 16-mixed"
        ]
    # the project's own settings too, and arguments that count (were tracebacks, or 5 epochs
    # for --epochs 0, or a --json folder found missing after the whole benchmark)
    for argv, said in (
        (["--skip-whole", "--per-class", "2", "2"], "error: data.batch_size=128 is larger than"),
        (["--reps", "0"], "argument --reps: '0' is not a whole number of 1 or more"),
        (["--epochs", "0"], "argument --epochs: '0' is not a whole number of 1 or more"),
        (["--json", "/nonexistent/x.json"], "--json /nonexistent/x.json: no folder /nonexistent"),
    ):
        with pytest.raises(SystemExit) as info:
            bench.main([*argv, "--cache-dir", str(cache_dir)])
        assert info.value.code == 2 and said in capsys.readouterr().err


def test_block_histograms_equal_numpys() -> None:
    """The state's histograms, computed for a whole block at once, are numpy's: same buckets,
    counts and moments; a tensor with a NaN keeps only its finite values."""
    import numpy as np

    from src.model.step_block import histograms as _histograms

    rows = [torch.randn(20) * (i + 1) for i in range(7)] + [torch.full((20,), 3.0)]
    rows.append(torch.tensor([1.0, float("nan"), 2.0, 4.0]))
    made = _histograms(rows)
    for row, h in zip(rows[:7], made):
        counts, edges = np.histogram(row.double().numpy(), bins=10)
        assert list(h.bucket) == counts.tolist() and np.allclose(h.bucket_limit, edges[1:])
        assert (h.min, h.max, h.num) == (float(row.min()), float(row.max()), 20)
        assert h.sum == pytest.approx(float(row.double().sum()))
    assert made[7].num == 20 and sum(made[7].bucket) == 20 and made[7].min == made[7].max == 3
    assert made[8].num == 3 and (made[8].min, made[8].max) == (1.0, 4.0)


@pytest.mark.slow
def test_the_profile_names_the_projects_step_and_lightnings_hooks(cache_dir: Path) -> None:
    """On 25 iterations, not the 2 x 500 of the script's setting: the names are the same."""
    from benchmarks.profile_loop import main

    text = main(["callbacks=none", "logger=none", "trainer.max_epochs=1",
                 "data.num_train_per_class=5", "--cache-dir", str(cache_dir),
                 "--lines", "60"])  # fmt: skip
    assert "training_step" in text and "_call_callback_hooks" in text
