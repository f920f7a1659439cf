"""Runs that survive: periodic atomic checkpoints, stops that save, exact resume mid-epoch."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from tensorboard.plugins.hparams import plugin_data_pb2

import src.checkpoint as checkpoint_module
from src.checkpoint import read_checkpoint
from src.config.compose import preflight
from src.errors import CheckpointError, RunStopped
from src.model.network import DigitsNet
from src.runtime.build import CONFIG_DIR
from src.train import train
from tests.conftest import (
    ROOT,
    TINY,
    Crash,
    assert_last_line_error,
    assert_one_line_error,
    cli_in_process,
    compose_config,
    raised_line,
    tb_events,
)
from tests.test_conventions import ITERS, column, csv_rows


def assert_same_training_state(a: dict | Path, b: dict | Path) -> tuple[dict, dict]:
    """Weights, batch-norm state, momentum and the schedule's own state bit-identical; a run
    folder stands for its last checkpoint. Returns the two checkpoints."""
    a, b = (torch.load(c / "checkpoints" / "last.ckpt", weights_only=True)
            if isinstance(c, Path) else c for c in (a, b))  # fmt: skip
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    mom_a, mom_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert mom_a.keys() == mom_b.keys() and mom_a
    for i in mom_a:
        assert torch.equal(mom_a[i]["momentum_buffer"], mom_b[i]["momentum_buffer"]), i
    assert a["lr_schedulers"] == b["lr_schedulers"]
    return a, b


def test_resume_mid_epoch_is_bit_identical(tmp_path: Path, cache_dir: Path) -> None:
    """Weights, state, momentum, the schedule's own state, and every logged value."""
    settings = [*TINY, "trainer.max_epochs=2", "test=false", "logger=[tensorboard,csv]",
                "scheduler=onecycle",
                "callbacks.model_checkpoint.every_n_train_steps=3"]  # fmt: skip
    train(compose_config(settings, tmp_path / "straight", cache_dir))

    crashed = compose_config(settings, tmp_path / "crashed", cache_dir)
    with open_dict(crashed):  # dies at iteration 10, after the checkpoint of iteration 9
        crashed.callbacks.crash = {"_target_": "tests.conftest.Crash", "at": 10}
    with pytest.raises(Crash.Died):
        train(crashed)
    ckpt_path = tmp_path / "crashed" / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(ckpt_path)
    assert ckpt["global_step"] == 9  # mid-epoch: 3 of the second epoch's 6 batches done
    position = checkpoint_module.loader_position(ckpt)
    assert position is not None and (position["epoch"], position["batches_done"]) == (1, 3)
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 9

    resumed = compose_config(settings, tmp_path / "resumed", cache_dir)
    with open_dict(resumed):
        resumed.ckpt_path = str(ckpt_path)
    metrics = train(resumed)
    assert metrics["global_step"] == 2 * ITERS

    _, final = assert_same_training_state(tmp_path / "straight", tmp_path / "resumed")
    # the learning rate of each iteration is the straight run's; the CSV log, like TensorBoard's,
    # holds the interrupted run's rows before the checkpoint, then the resumed run's
    rates = column(csv_rows(tmp_path / "straight"), "lr-SGD")
    after = column(csv_rows(tmp_path / "resumed"), "lr-SGD")
    assert sorted(after) == list(range(2 * ITERS))
    assert all(after[s] == rates[s] for s in after)
    # the resumed run's TensorBoard has the whole curve, each iteration once
    steps = [e.step for e in tb_events(tmp_path / "resumed" / "tensorboard").Scalars("train/loss")]
    assert steps == list(range(2 * ITERS))
    # the progress figure's history continues from the checkpoint
    plot = final["history"]
    assert plot["iterations"] == list(range(1, 2 * ITERS + 1))
    assert sorted(plot["epochs"]) == [0, ITERS]


def test_a_stop_at_an_epochs_last_iteration_keeps_its_end_and_resumes_exactly(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Saved at once, its checkpoint lacked the epoch's end (the schedule's step, validation, the
    figure's epoch line), which the resumed run then skipped: another learning rate on. It is
    saved and stopped once the epoch has ended."""
    settings = [*TINY, "trainer.max_epochs=2", "test=false", "logger=none", "scheduler=cosine"]
    train(compose_config(settings, tmp_path / "straight", cache_dir))
    stopped = compose_config(settings, tmp_path / "stopped", cache_dir)
    with open_dict(stopped):
        stopped.callbacks.signal_at = {"_target_": "tests.test_signals.SignalAt",
                                       "phase": "first_epochs_last_iteration"}  # fmt: skip
    with pytest.raises(RunStopped, match=f"stopped after iteration {ITERS};"):
        train(stopped)
    resumed = compose_config(settings, tmp_path / "resumed", cache_dir)
    with open_dict(resumed):
        resumed.ckpt_path = str(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
    train(resumed)
    straight, final = assert_same_training_state(tmp_path / "straight", tmp_path / "resumed")
    assert straight["history"] == final["history"]


def test_a_finished_run_resumed_with_nothing_left_ends_as_it_did(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Lightning skips a fit with no iteration left, and with it training's end: a population
    run was tested with the running state under the population's name, and saved nothing."""
    settings = [*TINY, "logger=none", "model.bn_stats=population"]
    done = train(compose_config(settings, tmp_path / "done", cache_dir))
    again = compose_config(settings, tmp_path / "again", cache_dir)
    with open_dict(again):
        again.ckpt_path = str(tmp_path / "done" / "checkpoints" / "last.ckpt")
    metrics = train(again)
    assert metrics["global_step"] == done["global_step"] == ITERS
    assert metrics["test/acc_population"] == done["test/acc_population"]
    _, second = assert_same_training_state(tmp_path / "done", tmp_path / "again")
    assert second["bn_statistics"]["used"] == "population"
    # train=false tests it as src.evaluate does: with the statistics it predicts with
    tested = compose_config([*settings[:-1], "train=false"], tmp_path / "tested", cache_dir)
    with open_dict(tested):
        tested.ckpt_path = again.ckpt_path
    assert train(tested)["test/acc_population"] == done["test/acc_population"]


_WRITER = """
import sys, torch
from pathlib import Path
from src.io import write_atomically
big = {"global_step": 0, "w": torch.zeros(12_000_000)}
for step in range(1, 1000):
    big["global_step"] = step
    big["w"].fill_(step)
    write_atomically(big, Path(sys.argv[1]))
    print(step, flush=True)
"""


@pytest.mark.slow
def test_killed_write_with_tmpdir_elsewhere_never_leaves_a_broken_file(tmp_path: Path) -> None:
    """SIGKILL during 48 MB writes, $TMPDIR on another filesystem (/dev/shm where there is one):
    `last.ckpt` is always a complete checkpoint, the old one or the new one."""
    tmpdir = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    target = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    for kill_after in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        proc.stdout.readline()  # one complete write first
        time.sleep(kill_after)
        proc.kill()
        proc.wait()
        data = torch.load(target, weights_only=True)
        assert torch.all(data["w"] == data["global_step"])
    assert [p.name for p in target.parent.iterdir()] != [] and all(
        p.name == "last.ckpt" or p.name.endswith(".tmp.ckpt") for p in target.parent.iterdir()
    )


@pytest.mark.slow
def test_diverging_run_stops_cleanly_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    proc = cli_in_process(*TINY, "trainer.max_epochs=3", "optimizer.lr=100",
                          "callbacks.model_checkpoint.every_n_train_steps=1",
                          f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")  # fmt: skip
    line = assert_last_line_error(
        proc, "training diverged", "iteration", "optimizer.lr=100", code=3
    )
    assert line in (run_dir / "train.log").read_text()
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    step = int(line.split("at iteration ")[1].split()[0])
    assert ckpt["global_step"] == step - 1  # the last iteration whose loss was finite
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    # Without the project's callbacks (Lightning's own checkpoint): the same exit, no test run
    bare = tmp_path / "bare"
    proc = cli_in_process(*TINY, "optimizer.lr=100", "callbacks=none",
                          f"paths.cache_dir={cache_dir}", f"hydra.run.dir={bare}")  # fmt: skip
    assert_last_line_error(proc, "training diverged", "iteration", "optimizer.lr=100",
                           "Lightning's own checkpoints of this run", code=3)  # fmt: skip
    assert not (bare / "metrics.json").exists()


def test_a_finished_runs_checkpoint_resumes_exactly_with_more_epochs(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A longer trainer.max_epochs is a setting that may change on resume: 1 epoch, then
    resumed to 2, ends as 2 epochs straight do (weights, state and momentum). Each run saves a
    checkpoint every 4 iterations and at the end of each epoch."""
    saved: dict[str, list[int]] = {}
    write = checkpoint_module.write_atomically

    def record(data: dict, path: Path) -> None:
        saved.setdefault(path.parents[1].name, []).append(data["global_step"])
        write(data, path)

    monkeypatch.setattr(checkpoint_module, "write_atomically", record)
    one = [*TINY, "test=false", "logger=none", "callbacks.model_checkpoint.every_n_train_steps=4"]
    two = [*one, "trainer.max_epochs=2"]
    train(compose_config(one, tmp_path / "one", cache_dir))
    train(compose_config(two, tmp_path / "straight", cache_dir))
    more = compose_config(two, tmp_path / "more", cache_dir)
    with open_dict(more):
        more.ckpt_path = str(tmp_path / "one" / "checkpoints" / "last.ckpt")
    assert train(more)["global_step"] == 2 * ITERS
    # every 4 iterations (4, 8) and at the end of each epoch (6, 12); resumed, from 6 on
    assert saved == {
        "one": [4, ITERS],
        "straight": [4, ITERS, 8, 2 * ITERS],
        "more": [8, 2 * ITERS],
    }
    assert not list((tmp_path / "straight" / "checkpoints").glob(".*.tmp*"))
    assert json.loads((tmp_path / "more" / "metrics.json").read_text())["global_step"] == 2 * ITERS
    assert_same_training_state(tmp_path / "straight", tmp_path / "more")


def _with_nan(good: Path, key: str, value: float = float("nan")) -> dict:
    saved = torch.load(good, weights_only=True)
    saved["state_dict"][key][0] = value
    return saved


STOPPING = "EarlyStopping{'monitor': 'val/acc', 'mode': 'max'}"


def _changed(good: Path, key: str, value: Any) -> dict:
    """`good` with the value at the dotted `key` (list items by number) replaced by `value`."""
    saved = torch.load(good, weights_only=True)
    *parents, last = [int(p) if p.isdigit() else p for p in key.split(".")]
    node = saved
    for part in parents:
        node = node[part]
    node[last] = value
    return saved


def _stopped(good: Path, **changed: Any) -> dict:
    """`good` with an EarlyStopping state that had stopped it, `changed`."""
    state = {"wait_count": 3, "stopped_epoch": 2, "best_score": torch.tensor(0.9), "patience": 3,
             "stopping_reason": 2, "stopping_reason_message": "no improvement"}  # fmt: skip
    return _with(good, "callbacks", {STOPPING: {**state, **changed}})


def _with(good: Path, key: str, values: dict) -> dict:
    saved = torch.load(good, weights_only=True)
    saved[key] = {**(saved.get(key) or {}), **values}
    return saved


@pytest.mark.parametrize(
    ("made", "needles"),
    [  # each kind of file a user might pass as ckpt_path, and what its error line must say
        pytest.param(lambda good: b"", ["empty"], id="empty"),
        pytest.param(lambda good: good.read_bytes()[:1000],
                     ["cannot be read", "damaged, truncated"], id="truncated"),
        pytest.param(lambda good: os.urandom(5000), ["cannot be read"], id="random"),
        pytest.param(lambda good: b"epoch: 3\nlr: 0.01\n", ["cannot be read"], id="text"),
        pytest.param(lambda good: {"a": 1}, ["not a training checkpoint", "'state_dict'"],
                     id="plain"),
        pytest.param(lambda good: torch.load(good, weights_only=True)["state_dict"],
                     ["bare weights"], id="bare"),
        # was tested, predicted (every probability nan) and exported (its check passed) as sound
        pytest.param(lambda good: _with_nan(good, "net.bn1.running_var"),
                     ["its net.bn1.running_var holds NaN or infinite values"], id="nan"),
        pytest.param(lambda good: _with_nan(good, "net.bn2.running_var", -0.5),  # was chance
                     ["its net.bn2.running_var holds negative variances"], id="negative"),
        pytest.param(lambda good: {**torch.load(good, weights_only=True),  # export's traceback
                                   "bn_statistics": {"used": "bogus"}},
                     ["its bn_statistics.used='bogus' is not one of running, population"],
                     id="used"),
        # read as dicts, and a state that fits the layers: were tracebacks in every command
        pytest.param(lambda good: {**torch.load(good, weights_only=True), "bn_statistics": "x"},
                     ["its bn_statistics is a str, not a dict"], id="statistics-type"),
        pytest.param(lambda good: _with(good, "bn_statistics", {"population": {"bn1.x": 1}}),
                     ["its bn_statistics.population does not fit its batch-norm layers"],
                     id="population"),
        pytest.param(lambda good: _with(good, "hyper_parameters", {"bn_stats": "???"}),
                     ["its stored model.bn_stats is '???', not a value"], id="missing-value"),
        # Lightning restores callback states unchecked: tracebacks inside the job, run folder made
        pytest.param(lambda good: {**torch.load(good, weights_only=True), "callbacks": [1]},
                     ["its callbacks is a list, not a dict"], id="callbacks-type"),
        pytest.param(lambda good: _stopped(good, patience="3"),
                     [f"its callbacks[{STOPPING!r}] is not a state the callback can take"],
                     id="early-stopping-field"),
        pytest.param(lambda good: _stopped(good, stopping_reason=99),
                     [f"its callbacks[{STOPPING!r}] is not"], id="early-stopping-reason"),
        pytest.param(lambda good: _with(good, "callbacks", {"ModelCheckpoint": [1]}),
                     ["its callbacks['ModelCheckpoint'] is not"], id="callback-state-type"),
        # what Lightning and torch restore unchecked: tracebacks (or no word) in the run
        pytest.param(lambda good: _changed(good, "pytorch-lightning_version", "0.5.0"),
                     ["its pytorch-lightning_version='0.5.0' is not that of Lightning 2"],
                     id="version"),
        pytest.param(lambda good: _changed(good, "global_step", "x"),
                     ["its global_step='x' is not a count"], id="global-step"),
        pytest.param(lambda good: _changed(good, "elapsed_s", float("nan")),
                     ["its elapsed_s=nan is not a number of seconds"], id="elapsed"),
        pytest.param(lambda good: _changed(good, "loops.fit_loop.epoch_progress.total.ready",
                                           10**20), ["its loops hold 10000"], id="loops-count"),
        pytest.param(lambda good: _changed(good, "config.trainer", "x"),
                     ["its config.trainer is not a dict"], id="config-trainer"),
        pytest.param(lambda good: _with(good, "state_dict",
                                        {"net.fc.bias": torch.zeros(10).to_sparse()}),
                     ["its net.fc.bias holds a sparse tensor"], id="sparse"),
        pytest.param(lambda good: _changed(good, "bn_statistics.used", "population"),
                     ["its bn_statistics.used='population', but it holds no bn_statistics.running"],
                     id="no-running"),  # evaluate said it predicted with population statistics
        pytest.param(lambda good: _changed(good, "elapsed_s", float("inf")),
                     ["its elapsed_s=inf is not"], id="elapsed-inf"),
        pytest.param(lambda good: _changed(good, "loops", 0), ["its loops hold no fit_loop"],
                     id="loops-type"),
        pytest.param(lambda good: _changed(good, "loops.fit_loop.epoch_progress", {}),
                     ["its loops hold no fit_loop.epoch_progress"], id="epoch-progress"),
        *[pytest.param(lambda good, k=key, v=value: _changed(good, k, v),
                       ["its optimizer_states are not one optimizer's state of its network's 14 "
                        "parameters"], id=f"optimizer-{n}")
          for n, (key, value) in enumerate([("optimizer_states", []),
                                            ("optimizer_states.0.state", [1, 2]),
                                            ("optimizer_states.0.state.0.momentum_buffer",
                                             torch.zeros(3))])],
        *[pytest.param(lambda good, k=key, v=value: _changed(good, f"optimizer_states.0."
                                                               f"param_groups.0.{k}", v),
                       [f"its optimizer_states hold {key}={value!r}, not a setting"], id=key)
          for key, value in [("lr", "fast"), ("lr", float("nan")), ("momentum", "x")]],
    ],
)  # fmt: skip
def test_each_bad_checkpoint_is_refused_before_the_run(
    tmp_path: Path, tiny_checkpoint: Path, made, needles: list[str]
) -> None:
    path, content = tmp_path / "bad.ckpt", made(tiny_checkpoint)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    run_dir = tmp_path / "run"
    argv = [f"ckpt_path={path}", f"hydra.run.dir={run_dir}"]
    message = raised_line(CheckpointError, lambda: preflight(argv, CONFIG_DIR, "config"), *needles)
    assert message.startswith(f"ckpt_path={path}: ")
    assert "weights_only` set to `False`" not in message  # torch's advice, unsafe for any file
    assert not run_dir.exists()


def test_an_optimizers_own_state_is_continued_and_an_odd_one_still_evaluated(
    tmp_path: Path, tiny_checkpoint: Path, cache_dir: Path
) -> None:
    """Adafactor's factored second moments (a dimension of 1), step counts and settings such as
    eps=(None, 1e-3) are an optimizer's state: resumed. An optimizer state a resume refuses
    stops no evaluation, which never reads it."""
    saved = torch.load(tiny_checkpoint, weights_only=True)
    optimizer = saved["optimizer_states"][0]
    for tensors in optimizer["state"].values():
        buffer = tensors.pop("momentum_buffer")
        tensors.update(step=torch.tensor(3.0), row_var=buffer.sum(-1, keepdim=True))
    optimizer["param_groups"][0].update(eps=(None, 1e-3), beta2_decay=-0.8, d=1.0)
    torch.save(saved, tmp_path / "factored.ckpt")
    run = [*TINY, f"paths.cache_dir={cache_dir}", f"ckpt_path={tmp_path}/factored.ckpt",
           f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    assert preflight(run, CONFIG_DIR, "config")[0] == "run"
    optimizer["param_groups"][0]["lr"] = "fast"
    torch.save(saved, tmp_path / "odd.ckpt")
    from src.evaluate import checked_evaluation

    evaluate = [f"ckpt_path={tmp_path}/odd.ckpt", f"hydra.run.dir={tmp_path}/ev"]
    assert preflight(evaluate, CONFIG_DIR, "evaluate", checked_evaluation)[0] == "run"


def test_a_checkpoint_that_cannot_continue_this_run_is_one_line(
    tmp_path: Path, tiny_checkpoint: Path, cache_dir: Path
) -> None:
    """Another network size, another cut of the interrupted epoch, another number of processes,
    or another optimizer or schedule: refused by name. Each through the command line, with no
    run folder made."""
    run_dir = tmp_path / "run"
    base = [*TINY, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}",
            f"ckpt_path={tiny_checkpoint}"]  # fmt: skip
    saved = read_checkpoint(tiny_checkpoint)
    assert checkpoint_module.loader_position(saved)["world_size"] == 1  # one process cut it
    # A network option the checkpoint predates (model.pool, say) was trained with its default.
    del saved["hyper_parameters"]["pool"]
    torch.save(saved, tmp_path / "before_pool.ckpt")
    # A one-cycle schedule over the whole run (total_steps=null) is sized by the run's length;
    # a cosine one's T_max is ${trainer.max_epochs}, so 1.
    for name in ("onecycle", "cosine"):
        schedule = compose_config([*TINY, f"scheduler={name}"], tmp_path / name, cache_dir)
        saved["config"]["scheduler"] = OmegaConf.to_container(schedule.scheduler, resolve=True)
        torch.save(saved, tmp_path / f"{name}.ckpt")
    trained = read_checkpoint(tiny_checkpoint)  # as if 3 epochs had been trained
    trained["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] = 3
    torch.save(trained, tmp_path / "three_epochs.ckpt")
    for change, *said in (
        (["model.num_filters=8"], "model.num_filters=20", "model.num_filters=8"),
        ([f"ckpt_path={tmp_path}/before_pool.ckpt", "model.pool=true"], "model.pool=false",
         "model.pool=true"),
        (["data.batch_size=16"], "data.batch_size=16", "middle of epoch 1", "data.batch_size=32"),
        (["data.num_train_per_class=30"], "data.num_train_per_class=30: ", "middle of epoch 1",
         "resume with data.num_train_per_class=20"),  # was refused only once the data was read
        (["trainer=ddp_cpu"], "trainer.devices=2: ", "dealt to 1 process(es); resume with 1 "
         "(trainer=cpu or trainer=gpu;"),
        # data.shuffle_seed is ${seed}: the key typed is the one to set back
        (["seed=1"], "data.shuffle_seed=1: ", "cut with data.shuffle_seed=0; resume with seed=0"),
        # its optimizer state is restored: another class failed at the first step (KeyError),
        # another setting was replaced by the checkpoint's without a word
        (["optimizer=adam"], "its optimizer is torch.optim.SGD, but this run's is "
         "torch.optim.Adam"),
        (["scheduler=onecycle"], "its schedule is none, but this run's is "
         "torch.optim.lr_scheduler.OneCycleLR"),
        (["optimizer.lr=0.123"], "but this run has optimizer.lr=0.123; resuming restores"),
        ([f"ckpt_path={tmp_path}/onecycle.ckpt", "scheduler=onecycle", "trainer.max_epochs=2"],
         "was trained with trainer.max_epochs=1, the run its schedule spans", "set "
         "trainer.max_epochs=1"),  # was a ValueError at the first step past the restored end
        # its hint was to set T_max back, for an extra epoch at the schedule's end (rate 0)
        ([f"ckpt_path={tmp_path}/cosine.ckpt", "scheduler=cosine", "trainer.max_epochs=2"],
         "scheduler.scheduler.T_max=2 (${trainer.max_epochs}: a schedule sized by the run cannot "
         "be extended)", "so set trainer.max_epochs=1"),
        ([f"ckpt_path={tmp_path}/three_epochs.ckpt"], "trainer.max_epochs=1: ", "has trained 3 "
         "epochs already", "set trainer.max_epochs=3 or more"),  # was exit 0, 3 epochs reported
        (["+trainer.max_steps=2"], "trainer.max_steps=2: ", "has trained 3 iterations already",
         "give it 3 or more (-1: no limit)"),  # was exit 0, global_step 3 under max_steps=2
    ):  # fmt: skip
        assert_one_line_error(cli_in_process(*base, *change), *said)
    assert not run_dir.exists()


def test_an_option_that_changes_a_layer_but_no_shape_cannot_continue(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A researcher's fork adds `model.gelu`, which swaps relu3 for a GELU: every weight still
    fits, so the layers are compared too (the resumed run went on with GELU without a word)."""
    import src.model.module
    import src.model.network

    base, kind = inspect.signature(DigitsNet), inspect.Parameter.KEYWORD_ONLY

    class Forked(DigitsNet):
        option = inspect.Parameter("gelu", kind, default=False, annotation=bool)
        __signature__ = base.replace(parameters=[*base.parameters.values(), option])

        def __init__(self, *args: Any, gelu: bool = False, **kw: Any) -> None:
            super().__init__(*args, **kw)
            if gelu:
                self.relu3 = torch.nn.GELU()

    for module in (src.model.module, src.model.network):
        monkeypatch.setattr(module, "DigitsNet", Forked)
    saved = read_checkpoint(tiny_checkpoint)  # trained before the option: its default, false
    check = checkpoint_module.check_network_matches
    check(saved, OmegaConf.create({"gelu": False}), tiny_checkpoint)  # the same network
    raised_line(CheckpointError, lambda: check(saved, OmegaConf.create({"gelu": True}),
                tiny_checkpoint), "was trained with model.gelu=false, but this run has "
                "model.gelu=true", "(set model.gelu=false)")  # fmt: skip


def test_a_resume_with_settings_no_check_refuses_says_which(
    tmp_path: Path,
    tiny_checkpoint: Path,
    ckpt: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """They build the same network, or (at an epoch's end) other data, so it goes on; an
    experiment preset left out (fast: bf16, channels_last), or another seed, made the rest of
    the run differ from one never stopped, without a word."""
    for path, changes in (
        (tiny_checkpoint, ["trainer.precision=bf16-mixed", "model.channels_last=true"]),
        # an epoch's end; the test set's settings change nothing the run trains on
        (ckpt, ["trainer.max_epochs=2", "seed=1", "data.style=print", "data.test_batch_size=7"]),
    ):
        run = tmp_path / path.parents[1].name
        train(compose_config([*TINY, f"ckpt_path={path}", *changes, "test=false"], run, cache_dir))
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for changed in (
        "model.channels_last=true (trained with false), trainer.precision='bf16-mixed' (trained "
        "with '32-true')",
        "seed=1 (trained with 0), data.shuffle_seed=1 (trained with 0), data.style='print' "
        "(trained with 'mixed')",
    ):
        lines = [
            m
            for m in said
            if f"Resuming with other settings than the checkpoint's: {changed};" in m
        ]
        assert lines, said


def test_a_resumed_run_continues_the_loggers_it_has(tmp_path: Path, cache_dir: Path) -> None:
    """Resumed into its own folder (a sweep's job), the CSV log lost its rows before the
    checkpoint (Lightning's CSV logger empties its file); resumed into another, TensorBoard's
    HParams tab showed the interrupted run's settings and results; resumed with logger=none, the
    run got a tensorboard folder of the old run's events."""
    run, loggers = tmp_path / "run", "logger=[tensorboard,csv]"
    train(compose_config([*TINY, loggers], run, cache_dir))
    resumed = [*TINY, "trainer.max_epochs=2", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    # TensorBoard reads a folder's event files in name order, which starts with the second a
    # writer opened: the resumed run's come a second later, as a real resume's do.
    time.sleep(1)
    for folder in ("other", "run"):  # another folder, then its own
        metrics = train(compose_config([*resumed, loggers], tmp_path / folder, cache_dir))
        rows = csv_rows(tmp_path / folder)
        assert [int(r["step"]) for r in rows if r.get("train/loss")] == list(range(2 * ITERS))
        events = tb_events(tmp_path / folder / "tensorboard")
        assert [e.step for e in events.Scalars("train/loss")] == list(range(2 * ITERS))
        (point,) = events.Scalars("hparams/test_acc")  # this run's alone
        assert (point.step, point.value) == (2 * ITERS, pytest.approx(metrics["test/acc"]))
        start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
        assert hparams["trainer.max_epochs"].number_value == 2  # the tab's: not the old run's
    train(compose_config([*resumed, "logger=none"], tmp_path / "none", cache_dir))
    assert not (tmp_path / "none" / "tensorboard").exists()


def test_a_run_stopped_by_max_steps_resumes_inside_its_epoch(
    tmp_path: Path, cache_dir: Path
) -> None:
    """trainer.max_steps ends an epoch part-way, which Lightning recorded as trained: resumed,
    the run went on with the next epoch and silently skipped the rest of that one."""
    settings = [*TINY, "trainer.max_epochs=2", "test=false", "logger=none", "scheduler=piecewise",
                "scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"]  # fmt: skip
    train(compose_config(settings, tmp_path / "straight", cache_dir))
    train(compose_config([*settings, "+trainer.max_steps=3"], tmp_path / "cut", cache_dir))
    cut = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    more = compose_config([*settings, f"ckpt_path={cut}"], tmp_path / "more", cache_dir)
    assert train(more)["global_step"] == 2 * ITERS
    # the schedule's state too: the cut epoch stepped it once
    assert_same_training_state(tmp_path / "straight", tmp_path / "more")
    # resumed at its end first (killed while testing, say), which writes its checkpoint again
    again = [*settings, "+trainer.max_steps=3", f"ckpt_path={cut}"]
    train(compose_config(again, tmp_path / "again", cache_dir))
    rewritten = tmp_path / "again" / "checkpoints" / "last.ckpt"
    later = compose_config([*settings, f"ckpt_path={rewritten}"], tmp_path / "later", cache_dir)
    train(later)
    assert_same_training_state(tmp_path / "straight", tmp_path / "later")
