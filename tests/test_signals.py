"""SIGINT and SIGTERM at each phase of a run: the documented exit code (130, 143), one `stopped:`
line, and every file left behind complete.

The run signals itself at a named phase: `SignalAt`, a test-only callback added on the command
line (`+callbacks.signal_at._target_=tests.test_signals.SignalAt`), or a patched function for
the phases before the trainer exists. In-process through `cli()`; a few real processes (slow).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml

import src.cli
import src.io as io_module
from src.checkpoint import read_checkpoint
from src.data.datamodule import DigitsDataModule
from tests.conftest import ROOT, TINY, cli_in_process, read_csv

CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class SignalAt(L.Callback):
    """Sends `signum` to this process once, at `phase` (a Lightning hook's moment)."""

    def __init__(self, phase: str, signum: int = int(signal.SIGINT), times: int = 1) -> None:
        self.phase, self.signum, self.times, self.sent = phase, signum, times, False

    def _send(self, phase: str) -> None:
        if phase == self.phase and not self.sent:
            self.sent = True
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._send("first_iteration" if batch_idx == 0 else "")
        self._send("second_epoch" if trainer.current_epoch == 1 else "")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._send("mid_epoch" if batch_idx == 1 else "")
        last = batch_idx + 1 == trainer.num_training_batches and trainer.current_epoch == 0
        self._send("first_epochs_last_iteration" if last else "")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._send("epoch_end")

    def on_train_end(self, trainer, pl_module) -> None:
        self._send("figures")  # before RunCheckpoint's own end and the progress figure's

    def on_validation_batch_start(self, trainer, *args: Any) -> None:
        self._send("" if trainer.sanity_checking else "validation")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._send("test")


def complete_files(run: Path) -> None:
    """Every file in the run folder read back whole; no temporary file left."""
    from PIL import Image

    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        assert ".tmp" not in path.name, path
        if path.suffix == ".ckpt":
            read_checkpoint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as im:
                im.load()


def stopped_line(proc: subprocess.CompletedProcess, signum: int) -> str:
    assert proc.returncode == CODES[signum], proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("stopped: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not any(ln.startswith("error: ") for ln in lines), proc.stderr[-3000:]
    return lines[-1]


def run_args(run: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [*TINY, "logger=tensorboard", f"paths.cache_dir={cache_dir}",
            f"hydra.run.dir={run}", *extra]  # fmt: skip


def with_signal(phase: str, signum: int) -> list[str]:
    return [
        "+callbacks.signal_at._target_=tests.test_signals.SignalAt",
        f"+callbacks.signal_at.phase={phase}",
        f"+callbacks.signal_at.signum={int(signum)}",
    ]


def signal_first(
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    signum: int,
    when=lambda *a, **k: True,
) -> None:
    """`owner.name` sends `signum` to this process the first time it is called with arguments
    `when` takes, then does its work."""
    real, sent = getattr(owner, name), []

    def send_first(*args, **kwargs):
        if not sent and when(*args, **kwargs):
            sent.append(1)
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, send_first)


SIGNALS = [signal.SIGINT, signal.SIGTERM]
# SIGTERM takes the same path as SIGINT once a handler runs: its runs are in the slow loop.
BOTH = [
    pytest.param(signal.SIGINT, id="SIGINT"),
    pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "phase", [pytest.param(src.cli, id="startup"), pytest.param(DigitsDataModule, id="data")]
)
def test_a_signal_before_training_stops_at_once(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, phase: object, signum: int
) -> None:
    """At the command's set-up or the data's: it was ignored before the first iteration, and the
    run trained, tested and exited 0."""
    signal_first(monkeypatch, phase, "setup", signum)
    run = tmp_path / "run"
    line = stopped_line(cli_in_process(*run_args(run, cache_dir)), signum)
    assert "no file was left half-written" in line
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()
    if run.exists():
        complete_files(run)


@pytest.mark.parametrize("signum", BOTH)
@pytest.mark.parametrize(
    ("phase", "step"),
    [
        ("first_iteration", 1),  # the iteration it came in, finished
        ("mid_epoch", 2),
        pytest.param("epoch_end", None, marks=pytest.mark.slow),  # the figures' path, nearly
        ("figures", None),
        ("checkpoint_write", 2),  # while last.ckpt is written: the write completes, then it stops
        ("test", None),  # it was ignored: testing finished and the run exited 0
    ],
)
def test_a_signal_in_training_or_testing_saves_and_stops(
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
    step: int | None,
    signum: int,
) -> None:
    run = tmp_path / "run"
    if phase == "checkpoint_write":
        signal_first(monkeypatch, io_module, "_commit", signum, lambda _, p: p.name == "last.ckpt")
        args = run_args(run, cache_dir, "callbacks.model_checkpoint.every_n_train_steps=1")
    else:
        args = run_args(run, cache_dir, *with_signal(phase, signum))
    line = stopped_line(cli_in_process(*args), signum)
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = read_checkpoint(ckpt_path)
    assert step in (None, ckpt["global_step"]), line
    if phase == "test":  # training's checkpoint kept
        assert "after training" in line and "is complete" in line and "src.evaluate" in line
    else:
        assert f"Resume with: python -m src.train ckpt_path={ckpt_path}" in line
        # with the run's own overrides (were left out: the command failed on another batch size)
        resumed = shlex.split(line.split("Resume with: ", 1)[1])[4:]
        assert resumed == [a for a in args if not a.startswith("hydra.")]
        name = signal.Signals(signum).name
        assert line.startswith(f"stopped: {name}: stopped after iteration {ckpt['global_step']};")
        assert line in (run / "train.log").read_text()
    assert not (run / "metrics.json").exists()  # never tested, or not to the end
    complete_files(run)


def test_the_resume_line_of_a_run_from_ones_own_config_folder_resumes_it(
    tmp_path: Path, cache_dir: Path
) -> None:
    """`--config-dir` (an experiment of one's own), another primary config and a search path
    were left out of the printed command, which then failed ("Could not find 'experiment/mine'");
    a run so composed was also not checked before its folder (it trained over an earlier run)."""
    mine = tmp_path / "mine"
    (mine / "experiment").mkdir(parents=True)
    (mine / "experiment" / "own.yaml").write_text("# @package _global_\nseed: 7\n")
    (mine / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nnum_threads: 1\n")
    run = tmp_path / "run"
    flags = ["--config-dir", str(mine), "--config-name", "mine"]
    args = [*flags, *run_args(run, cache_dir, "experiment=own", *with_signal("mid_epoch", 2))]
    line = stopped_line(cli_in_process(*args), signal.SIGINT)
    resumed = shlex.split(line.split("Resume with: ", 1)[1])[3:]
    assert resumed[:4] == flags and "experiment=own" in resumed
    again = cli_in_process(*resumed, f"hydra.run.dir={tmp_path / 'resumed'}")
    assert again.returncode == 0, again.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())
    assert (config["seed"], config["num_threads"]) == (7, 1)
    # the same command into the stopped run's folder: refused before it starts, as without
    assert cli_in_process(*args).returncode == 2


@pytest.mark.parametrize(
    ("hook", "ended", "after"),
    [
        ("on_job_start", 1, "; run the same command again to resume it"),  # the second job's
        ("gather", 2, ""),  # after the last job: nothing left to resume
    ],
)
def test_a_signal_to_a_sweeps_own_process_ends_with_its_summary(
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    hook: str,
    ended: int,
    after: str,
) -> None:
    """The process that launches a sweep stopped between two jobs, or before its summary (or,
    under joblib, while its workers run: the load test in test_sweep_resume): the summary of the
    jobs that ended, and how to go on. It was the bare stop line, with no summary."""
    from src.sweep.naming import job_num
    from src.sweep.summary import SweepSummary

    def when(self: SweepSummary, *args: Any, **kw: Any) -> bool:  # on_job_start(config=...)
        return hook == "gather" or job_num(kw.get("config") or args[0]) == 1

    signal_first(monkeypatch, SweepSummary, hook, signal.SIGINT, when)
    sweep = tmp_path / "sweep"
    proc = cli_in_process("--multirun", *TINY, "logger=none", "reports=none", "seed=0,1",
                          f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert stopped_line(proc, signal.SIGINT) == (
        f"stopped: SIGINT: the sweep stops, {ended} of 2 jobs ended (see "
        f"{sweep / 'summary.csv'}){after}"
    )
    statuses = ["ok"] * ended + ["stopped"] * (2 - ended)  # the second: its folder, no run
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == statuses
    assert f"Sweep: 2 jobs, {ended} ok, 0 failed" in proc.stdout


def test_a_stop_python_drops_still_ends_the_command(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal whose exception lands where Python cannot raise it (a weakref callback, run by
    a garbage collection as the sweep's jobs are gathered) still stops the command: it was
    exit 0, after an 'Exception ignored' traceback."""
    import gc
    import weakref

    from src.sweep import summary

    class Holder:
        pass

    def collect_with_a_signal() -> int:
        holder = Holder()

        def callback(_: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(10000))  # Python code after it: the handler runs in here

        ref = weakref.ref(holder, callback)
        del holder  # the callback runs now
        assert ref() is None
        return gc.collect()

    gather = summary.SweepSummary.gather  # before the summary, where a signal still stops

    def gather_with_a_signal(self: summary.SweepSummary, *args: Any) -> None:
        collect_with_a_signal()
        return gather(self, *args)

    monkeypatch.setattr(summary.SweepSummary, "gather", gather_with_a_signal)
    sweep = tmp_path / "sweep"
    proc = cli_in_process("--multirun", *TINY, "logger=none", "reports=none", "seed=0,1",
                          f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")  # fmt: skip
    line = stopped_line(proc, signal.SIGINT)
    assert line == "stopped: SIGINT: stopped; no file was left half-written"
    assert "Exception ignored" not in proc.stderr
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok", "ok"]


def test_a_signal_while_a_finished_sweep_writes_its_summary_is_ignored(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job has ended, so nothing is left to stop, as after a single run's last line: the
    summary was lost, or the sweep reported as stopped (exit 143) after its table."""
    from src.sweep.summary import SweepSummary

    signal_first(monkeypatch, SweepSummary, "write_csv", signal.SIGTERM)
    sweep = tmp_path / "sweep"
    proc = cli_in_process("--multirun", *TINY, "logger=none", "reports=none", "seed=0,1",
                          f"paths.cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok", "ok"]
    assert "Sweep: 2 jobs, 2 ok, 0 failed" in (sweep / "summary.txt").read_text()


def test_a_stop_another_error_replaced_still_ends_the_command(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library the signal interrupts mid-update can fail on its broken state next (OmegaConf
    inside `hydra.utils.instantiate`, under DDP): that error was the run's end, exit 1 with
    its traceback or 2, instead of the stop."""
    import src.train

    def interrupted(*args: Any, **kwargs: Any) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(10000))  # Python code after it: the handler runs in here
        except BaseException as err:
            raise AttributeError("'NoneType' object has no attribute '_flags'") from err

    monkeypatch.setattr(src.train, "print_config_tree", interrupted)
    run = tmp_path / "run"
    line = stopped_line(cli_in_process(*run_args(run, cache_dir)), signal.SIGTERM)
    assert line == "stopped: SIGTERM: stopped; no file was left half-written"


def test_handlers_are_given_back_after_an_in_process_run(tmp_path: Path, cache_dir: Path) -> None:
    before = {s: signal.getsignal(s) for s in SIGNALS}
    cli_in_process("optimizer.lr=abc", f"hydra.run.dir={tmp_path / 'run'}")
    assert {s: signal.getsignal(s) for s in SIGNALS} == before


# ---------------------------------------------------------------------------------------------
# Real processes


def _popen(module: str, *args: str, sigint_ignored: bool = False) -> subprocess.Popen:
    """`python -m MODULE ARGS` started from a terminal, or (`sigint_ignored`) as a shell starts a
    background job: SIGINT ignored from the start."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler yet (its `SigCgt` mask): the first thing the
    entry module does, before its imports; Python itself installs none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _while_importing(proc: subprocess.Popen) -> None:
    """Wait until the entry module has installed its handler; assert torch is not loaded yet."""
    deadline = time.monotonic() + 60
    while not _handles_sigterm(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.002)
    assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()


def _finished(proc: subprocess.Popen, timeout: int = 120) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---------------------------------------------------------------------------------------------
# Start-up: a signal while Python is still importing, and a SIGINT inherited as ignored

ON_LINUX = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")


@ON_LINUX
@pytest.mark.parametrize(
    ("module", "signum", "background"),
    [
        *[(m, s, False) for m in ("src.train", "src.evaluate", "src.predict", "src.export")
          for s in SIGNALS],
        ("src.train", signal.SIGTERM, True),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else str(v),
)  # fmt: skip
def test_a_signal_while_importing_is_one_line(
    tmp_path: Path, cache_dir: Path, signum: int, module: str, background: bool
) -> None:
    """Before torch is loaded: it was a KeyboardInterrupt traceback (SIGINT) or a silent death
    by the signal (SIGTERM). A background job's Ctrl-C does not stop it at start-up either: its
    SIGINT, inherited as ignored, is ignored, and SIGTERM still stops it."""
    run = tmp_path / "run"
    args = run_args(run, cache_dir) if module == "src.train" else [f"hydra.run.dir={run}"]
    proc = _popen(module, *args, sigint_ignored=background)
    _while_importing(proc)
    if background:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signum)
    done = _finished(proc)
    line = stopped_line(done, signum)
    assert line == f"stopped: {signal.Signals(signum).name}: stopped; no file was left half-written"
    assert done.stderr.strip() == line  # and no word of the ignored SIGINT
    assert not run.exists()


@pytest.fixture
def sigint_ignored() -> object:
    """This process as a shell starts a background job: SIGINT ignored from the start."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored_and_sigterm_still_stops(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, sigint_ignored: object
) -> None:
    """A job meant to outlive the terminal's Ctrl-C does: SIGINT at start-up (the command's
    handler) and in training (RunCheckpoint's) is ignored and the run finishes; the process
    keeps it ignored. SIGTERM still saves and stops. Both were stops (exit 130)."""
    signal_first(monkeypatch, src.cli, "setup", signal.SIGINT)  # the first run's set-up only
    run = tmp_path / "run"
    proc = cli_in_process(*run_args(run, cache_dir, *with_signal("mid_epoch", signal.SIGINT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SIGINT" not in proc.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 200 // 32  # all of it
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN

    term = tmp_path / "term"
    line = stopped_line(
        cli_in_process(*run_args(term, cache_dir, *with_signal("mid_epoch", signal.SIGTERM))),
        signal.SIGTERM,
    )
    assert "stopped after iteration 2" in line
    assert read_checkpoint(term / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


@pytest.mark.slow
def test_a_signal_once_the_run_is_complete_changes_nothing(tmp_path: Path, cache_dir: Path) -> None:
    """After its last line the command only shuts Python down, which can take a second: a
    signal then was the process's death by that signal (143, no line) for a complete run."""
    run = tmp_path / "run"
    proc = _popen("src.train", *run_args(run, cache_dir, "reports=none"))
    for line in proc.stdout:  # type: ignore[union-attr]
        if "Outputs in" in line:
            time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            break
    done = _finished(proc)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped" not in done.stderr
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 200 // 32


def test_a_signal_as_the_last_line_is_written_is_ignored(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT the moment `Outputs in` is logged: the run is complete (exit 0). It was a stop
    (130) whose line offered to test the already tested checkpoint."""
    is_last = lambda _, message, *args, **kwargs: message == "Outputs in %s"  # noqa: E731
    signal_first(monkeypatch, logging.Logger, "info", signal.SIGINT, is_last)
    run = tmp_path / "run"
    proc = cli_in_process(*run_args(run, cache_dir, "reports=none"))
    assert proc.returncode == 0 and "stopped" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 200 // 32


@pytest.mark.slow
def test_joblib_workers_keep_an_inherited_ignored_sigint(tmp_path: Path, cache_dir: Path) -> None:
    """A sweep started as a background job: loky's workers inherit SIGINT ignored, and a job's
    SIGINT is ignored (it finishes); a job's SIGTERM still saves and stops it, and the sweep."""
    sweep = tmp_path / "sweep"
    args = [*TINY, "logger=none", "test=true", f"paths.cache_dir={cache_dir}",
            f"hydra.sweep.dir={sweep}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1",
            *with_signal("mid_epoch", signal.SIGINT)[:2],
            f"+callbacks.signal_at.signum={int(signal.SIGINT)},{int(signal.SIGTERM)}"]  # fmt: skip
    proc = _popen("src.train", "--multirun", *args, sigint_ignored=True)
    done = _finished(proc, timeout=300)
    assert done.returncode == CODES[signal.SIGTERM], done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert "stopped: SIGINT" not in done.stderr
    assert "stopped: SIGTERM: stopped after iteration 2" in done.stderr
    rows = read_csv(sweep / "summary.csv")
    assert [row["status"] for row in rows] == ["ok", "stopped"], rows
    assert (Path(rows[0]["run_dir"]) / "metrics.json").is_file()
    stopped = Path(rows[1]["run_dir"]) / "checkpoints" / "last.ckpt"
    assert read_checkpoint(stopped)["global_step"] == 2


@pytest.mark.parametrize(
    ("settings", "phase", "signum", "step", "said"),
    [
        # the epoch's end runs (its validation too) and is saved: no iteration of the next first
        (["data.val_fraction=0.2", "trainer.max_epochs=2"], "validation", signal.SIGTERM, 5,
         "stopped: SIGTERM: stopped after iteration 5; saved {saved}"),
        # a second signal stops at once, nothing saved: the epoch's checkpoint is the one left
        (["trainer.max_epochs=3", "+callbacks.signal_at.times=2"], "second_epoch", signal.SIGINT,
         6, "stopped: SIGINT again: stopped at once without saving; the last checkpoint, of "
         "iteration 6, is {saved}. Resume with: python -m src.train ckpt_path={saved}"),
    ],
)  # fmt: skip
def test_a_stop_says_which_checkpoint_it_leaves(
    tmp_path: Path, cache_dir: Path, settings: list[str], phase: str, signum: int, step: int,
    said: str,
) -> None:  # fmt: skip
    run = tmp_path / "run"
    args = run_args(run, cache_dir, *settings, *with_signal(phase, signum))
    line = stopped_line(cli_in_process(*args), signum)
    saved = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(saved)["global_step"] == step
    assert said.format(saved=saved) in line


def test_a_signal_without_the_projects_checkpoints_points_to_lightnings(
    tmp_path: Path, cache_dir: Path
) -> None:
    """callbacks=none: Lightning's own ModelCheckpoint saved epoch 1; the stop names it and how
    to resume from it (was the message of a stop before any training, naming nothing)."""
    run = tmp_path / "run"
    args = run_args(run, cache_dir, "callbacks=none", "trainer.max_epochs=3",
                    *with_signal("second_epoch", signal.SIGINT))  # fmt: skip
    line = stopped_line(cli_in_process(*args), signal.SIGINT)
    (saved,) = run.rglob("*.ckpt")
    assert saved.name == "epoch=0-step=6.ckpt"
    assert f"the last checkpoint Lightning saved: {saved}. Resume with: " in line
    resumed = shlex.split(line.split("Resume with: ", 1)[1])
    assert resumed[3] == f"ckpt_path='{saved}'"  # quoted for Hydra: the name holds '='
    assert resumed[4:] == [a for a in args if not a.startswith("hydra.")]
