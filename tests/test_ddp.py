"""Several processes that hold one state: DDP on the CPU (gloo), through the real CLI and piece by
piece in processes started here.

Every comparison runs its processes with the same thread count (conftest's OMP_NUM_THREADS=1, or
the one set): results depend on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from src.checkpoint import loader_position, read_checkpoint
from src.data.datamodule import EpochBatchSampler
from src.errors import DataError
from src.model.module import BNStateModule
from src.model.network import BatchNorm
from src.model.state import population_statistics
from src.train import train
from tests.conftest import ROOT, TINY, compose_config, free_port, run_cli
from tests.test_checkpoints import assert_same_training_state
from tests.test_validation import datamodule

# ---------------------------------------------------------------------------------------------
# Dealing out the data: no process group needed


def test_the_shards_of_an_iteration_are_the_single_process_batch() -> None:
    n, b, world = 203, 8, 3
    single = EpochBatchSampler(n, b * world, shuffle=True, seed=5)
    shards = [EpochBatchSampler(n, b, True, 5, rank=r, world_size=world) for r in range(world)]
    for epoch in (0, 1):
        for s in (single, *shards):
            s.set_epoch(epoch)
        per_rank = [list(s) for s in shards]
        assert all(len(batches) == n // (b * world) == len(single) for batches in per_rank)
        for i, batch in enumerate(single):
            assert torch.equal(torch.cat([batches[i] for batches in per_rank]), batch)


def test_ordered_shards_cover_every_sample_once_without_padding() -> None:
    for n, b, world in ((100, 64, 2), (100, 16, 3), (5000, 128, 4), (10, 64, 2)):
        shards = [EpochBatchSampler(n, b, False, rank=r, world_size=world) for r in range(world)]
        seen = torch.cat([i for s in shards for i in s])
        assert torch.equal(seen.sort().values, torch.arange(n)), (n, b, world)
        assert all(len(s) >= 1 for s in shards)  # no process without a batch (it would hang)
        assert sum(len(s) for s in shards) == len(torch.arange(n).split(shards[0].batch_size))


def test_the_loader_position_records_the_processes_and_refuses_another_count_mid_epoch() -> None:
    sampler = EpochBatchSampler(200, 32, True, 0, rank=1, world_size=2)
    it = iter(sampler)
    next(it)
    state = sampler.state_dict()
    assert state["world_size"] == 2 and state["batches_done"] == 1
    resumed = EpochBatchSampler(200, 32, True, 0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in list(sampler)[1:]]
    with pytest.raises(DataError, match="2 processes|1 processes"):
        EpochBatchSampler(200, 32, True, 0).load_state_dict(state)
    # the end of an epoch cut by 2 processes (3 iterations) is no mid-epoch for 1 process
    EpochBatchSampler(200, 32, True, 0).load_state_dict({**state, "batches_done": 3})
    # checkpoints from before DDP had no world_size: one process
    legacy = {k: v for k, v in state.items() if k != "world_size"}
    EpochBatchSampler(200, 32, True, 0).load_state_dict(legacy)


# ---------------------------------------------------------------------------------------------
# Pieces in 2 processes of our own (gloo), against the single-process computation


B, C = 6, 5  # images per process, channels


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same global batch, gradient and BN parameters in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * B, C, 7, 7, generator=g) * 3 + 1.5
    grad = torch.randn(2 * B, C, 7, 7, generator=g)
    weight, bias = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    return x, grad, weight, bias


def _pieces_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        result: dict[str, Any] = {}
        # synchronised batch norm: forward, backward and the new running statistics
        x, grad, weight, bias = _global_batch()
        bn = BatchNorm(C, decay=0.1, epsilon=1e-5, sync_batchnorm=True)
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
            bn.running_mean.fill_(0.3)
        local = x[rank * B : (rank + 1) * B].clone().requires_grad_()
        y, mean, var = bn.forward_train(local, bn.running_mean, bn.running_var)
        (y * grad[rank * B : (rank + 1) * B]).sum().backward()
        result.update(y=y.detach(), mean=mean, var=var, x_grad=local.grad,
                      w_grad=bn.weight.grad, b_grad=bn.bias.grad)  # fmt: skip
        result["state_untouched"] = bool((bn.running_mean == 0.3).all())
        bn.sync_batchnorm = False  # each process's own statistics: what the sync replaces
        result["y_local"] = bn.forward_train(local.detach(), bn.running_mean, bn.running_var)[0]

        # the state average of the training step: one all-reduce, identical everywhere
        module = BNStateModule(num_filters=4)
        module._trainer = SimpleNamespace(world_size=world)
        state = {k: torch.full_like(v, rank + 1.0) for k, v in module.net.state.items()}
        result["averaged"] = module.mean_over_processes(state, torch.tensor(2.0 * rank))
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_hold_the_global_batchs_statistics_and_state(tmp_path: Path) -> None:
    """Synchronised batch norm is batch norm of the global batch; the state and loss are averaged
    over the processes (2 processes of our own: slow). The population statistics merged over
    the processes: test_ddp_cpu_processes_end_with_one_state_the_checkpoints."""
    mp.spawn(_pieces_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    two_process_pieces = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    x, grad, weight, bias = _global_batch()
    x = x.clone().requires_grad_()
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    mean, var = torch.full((C,), 0.3), torch.ones(C)
    y = F.batch_norm(x, mean, var, w, b, True, 0.1, 1e-5)  # updates mean and var in place
    (y * grad).sum().backward()
    r0, r1 = two_process_pieces
    tight = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), **tight)
    torch.testing.assert_close(torch.cat([r0["x_grad"], r1["x_grad"]]), x.grad, **tight)
    # DDP sums (then averages) the parameters' gradients; their sum is the global batch's
    torch.testing.assert_close(r0["w_grad"] + r1["w_grad"], w.grad, **tight)
    torch.testing.assert_close(r0["b_grad"] + r1["b_grad"], b.grad, **tight)
    for r in (r0, r1):
        torch.testing.assert_close(r["mean"], mean, **tight)
        torch.testing.assert_close(r["var"], var, **tight)  # unbiased, like F.batch_norm
        assert r["state_untouched"]  # the layer's own state is the caller's to change
    assert torch.equal(r0["mean"], r1["mean"]) and torch.equal(r0["var"], r1["var"])
    # and without the sync each process's half of the batch is normalised otherwise
    local = torch.cat([r0["y_local"], r1["y_local"]])
    assert (local - y.detach()).abs().max() > 1e-2
    # the state and loss of the training step: averaged
    for r in two_process_pieces:
        state, loss = r["averaged"]
        assert all(torch.equal(v, torch.full_like(v, 1.5)) for v in state.values())
        assert float(loss) == 1.0


def test_without_a_process_group_nothing_is_synchronised_or_averaged() -> None:
    x, _, weight, bias = _global_batch()
    plain, synced = BatchNorm(C), BatchNorm(C, sync_batchnorm=True)
    for bn in (plain, synced):
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
    a = plain.forward_train(x, plain.running_mean, plain.running_var)
    b = synced.forward_train(x, synced.running_mean, synced.running_var)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    module = BNStateModule(num_filters=4)
    state, loss = module.net.state, torch.tensor(0.5)
    assert module.mean_over_processes(state, loss) == (state, loss)


# ---------------------------------------------------------------------------------------------
# Through the CLI: `trainer=ddp_cpu`, 2 processes


class DumpState(L.Callback):
    """Test-only: each process writes what it ends training with, and its loss at every
    iteration, to `dirpath/rank<R>.pt`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        dump = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            "losses": self.losses,
        }
        torch.save(dump, self.dirpath / f"rank{trainer.global_rank}.pt")


def _dumps(folder: Path, world: int) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(world)]


def _dump_args(folder: Path) -> list[str]:
    return [
        "+callbacks.dump._target_=tests.test_ddp.DumpState",
        f"+callbacks.dump.dirpath={folder}",
    ]


# 3 epochs of 12 iterations with 2 processes of batch 32: time to stop one mid-epoch.
LONGER = [*TINY, "data.num_train_per_class=80", "trainer.max_epochs=3", "trainer=ddp_cpu",
          "model.bn_stats=population", "callbacks.model_checkpoint.every_n_train_steps=2",
          "logger=none"]  # fmt: skip
ITERS = 800 // (32 * 2)


@pytest.fixture(scope="module")
def ddp_run(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> tuple[subprocess.CompletedProcess, Path, list[dict]]:
    """LONGER through the CLI, never stopped: the process, its run folder and what each of its
    processes ended training with."""
    base = tmp_path_factory.mktemp("ddp")
    proc = run_cli(*LONGER, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={base / 'run'}",
                *_dump_args(base / "dumps"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, base / "run", _dumps(base / "dumps", 2)


@pytest.mark.slow
def test_ddp_cpu_processes_end_with_one_state_the_checkpoints(ddp_run, cache_dir: Path) -> None:
    """Population statistics too: each process passes over its share of the training set."""
    proc, run_dir, ranks = ddp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 3 * ITERS
    assert [d["rank"] for d in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 * ITERS
    for key, value in ckpt["state_dict"].items():  # weights, state and mean image
        assert torch.equal(ranks[0]["state_dict"][key], value), key
        assert torch.equal(ranks[1]["state_dict"][key], value), key
    # the running state moved, and the logged loss is the global batch's: the same in both
    running = ckpt["bn_statistics"]["running"]
    assert not torch.equal(running["bn1.running_var"], torch.ones(20))
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3 * ITERS
    # the resumed data position is the iteration count of the epoch
    position = loader_position(ckpt)
    assert position["batches_done"] == ITERS and position["world_size"] == 2

    # test accuracy over the whole test set, as one process computes it from the checkpoint
    dm = datamodule(cache_dir, test_batch_size=64, num_train_per_class=80)
    model = BNStateModule()
    model.load_state_dict(ckpt["state_dict"])
    # the state predicted with: the population statistics of the whole training set
    assert ckpt["bn_statistics"]["used"] == "population"
    whole = population_statistics(model.net, lambda: dm.train_set.images.split(64))
    for key, value in whole.items():
        torch.testing.assert_close(ckpt["state_dict"][f"net.{key}"], value, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        acc = (model.net(dm.test_set.images).argmax(1) == dm.test_set.labels).float().mean()
    assert metrics["test/acc"] == pytest.approx(float(acc), abs=1e-6)
    # one set of outputs, from rank 0; the other process logged to its own file
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert (run_dir / "train_ddp_process_1.log").is_file()
    assert proc.stdout.count("Outputs in") + proc.stderr.count("Outputs in") == 1


@pytest.mark.slow
def test_sync_batchnorm_2x_b_equals_one_process_with_2b(tmp_path: Path, cache_dir: Path) -> None:
    """2 processes with batches of 16 and the global batch's statistics are 1 process with
    batches of 32 and the same data order: the same loss at every iteration.

    At a learning rate of 0.001. At the default 0.01 this tiny run is so sensitive that the
    single float32 process itself drifts from its float64 twin (1.2e-3 in the loss by iteration
    6, through F.batch_norm's float32 arithmetic), while the 2 synchronised processes, whose
    statistics are summed in float64, stay within 2e-7 of it: no float32 tolerance holds there.
    """
    common = [*TINY, "test=false", f"paths.cache_dir={cache_dir}", "logger=none",
              "optimizer.lr=0.001"]  # fmt: skip
    two = run_cli(*common, "trainer=ddp_cpu", "data.batch_size=16", "model.sync_batchnorm=true",
               f"hydra.run.dir={tmp_path / 'two'}", *_dump_args(tmp_path / "d2"))  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    logs = [p.read_text() for p in (tmp_path / "two").glob("*.log")]
    assert len(logs) >= 2 and not any("FutureWarning" in t for t in logs)  # torch's deprecation
    # the single process in this one (its thread count is the same)
    train(compose_config([*common, *_dump_args(tmp_path / "d1")], tmp_path / "one", cache_dir))
    (single,), pair = _dumps(tmp_path / "d1", 1), _dumps(tmp_path / "d2", 2)
    assert single["global_step"] == pair[0]["global_step"] == 200 // 32
    for rank in pair:
        torch.testing.assert_close(torch.tensor(rank["losses"]), torch.tensor(single["losses"]),
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
    for key, value in single["state_dict"].items():
        assert torch.equal(pair[0]["state_dict"][key], pair[1]["state_dict"][key]), key
        gap = (pair[0]["state_dict"][key] - value).norm()
        assert gap <= 1e-3 * value.norm() + 1e-5, (key, float(gap), float(value.norm()))


# ---------------------------------------------------------------------------------------------
# Stops and resumes under DDP


@pytest.mark.slow
def test_sigterm_under_ddp_saves_then_the_run_resumes_exactly(
    tmp_path: Path, cache_dir: Path, ddp_run
) -> None:
    """Stopped mid-run, then resumed: it ends as `ddp_run`, never stopped, ends."""
    ckpt_path = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    args = [*LONGER, f"paths.cache_dir={cache_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args,
                             f"hydra.run.dir={tmp_path / 'stopped'}"],  # fmt: skip
                            cwd=ROOT, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (ckpt_path.is_file() and read_checkpoint(ckpt_path)["global_step"] >= 4):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    stopped = [ln for ln in stderr.splitlines() if ln.startswith("stopped: SIGTERM")]
    assert stopped and f"ckpt_path={ckpt_path}" in stopped[-1], stderr
    step = read_checkpoint(ckpt_path)["global_step"]
    assert str(step) in stopped[-1]
    assert 0 < step < 3 * ITERS

    resumed = run_cli(*args, f"ckpt_path={ckpt_path}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight, _ = assert_same_training_state(ddp_run[1], tmp_path / "resumed")
    assert straight["global_step"] == 3 * ITERS
