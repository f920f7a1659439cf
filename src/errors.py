"""Every failure the project names, and the one line each becomes.

Exit codes (`src.cli`): 0 done; 2 bad input (`ConfigError`, `DataError`, `CheckpointError`: one
`error:` line); 3 training diverged (`TrainingDiverged`); 4 an output could not be written
(`OutputWriteError` and any other `OSError`); 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM
(`RunStopped`); 1 anything unexpected (a bug: the traceback is printed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(ValueError):
    """Bad data on disk or in a generator's output; the message names the file or value."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class OutputWriteError(OSError):
    """An output file could not be written (full disk, no permission); the file that was there
    before, if any, is intact. Its message is the whole line (exit code 4)."""

    def __str__(self) -> str:
        return str(self.strerror)


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message names the iteration."""


class RunStopped(BaseException):
    """The run stopped on a signal. `path`: the checkpoint kept (None: none); `iteration`: the
    last completed iteration it holds (-1: not known); `finished`: training had ended, so the
    checkpoint is the finished run's.

    A BaseException, like KeyboardInterrupt: raised by a signal handler at any point, it must
    not be taken for a failure of the code it interrupts (`except Exception` turning it into a
    data error, say, or Hydra's report of a failed job).
    """

    def __init__(
        self,
        signum: int,
        path: Path | None,
        iteration: int,
        finished: bool = False,
        again: bool = False,
    ) -> None:
        self.signum, self.path, self.iteration, self.finished = signum, path, iteration, finished
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if again:
            message = f"{name} again: stopped at once without saving" + (
                f"; the last checkpoint, of iteration {iteration}, is {path}" if path else ""
            )
        elif finished:
            message = f"{name} after training: stopped; the training checkpoint {path} is complete"
        elif path is None:
            message = f"{name}: stopped; no file was left half-written"
        else:
            message = f"{name}: stopped after iteration {iteration}; saved {path}"
        super().__init__(message)


# The checkpoint of a run whose training has ended (set by RunCheckpoint), for the line a
# signal during testing or the last writes ends the run with; reset by `stop_on_signals`.
_kept: dict[str, Any] = {"checkpoint": None, "signal": None, "unraisable": sys.unraisablehook}


def keep_checkpoint(path: Path | None) -> None:
    """Training has ended with `path` complete: a later stop says so."""
    _kept["checkpoint"] = path


def handled_signals() -> list[int]:
    """The signals a run stops on: SIGTERM always; SIGINT unless this process started with it
    ignored.

    The Unix convention (`if signal(SIGINT, SIG_IGN) != SIG_IGN`): a shell starts a background
    job of a script, and `nohup`-style launchers start theirs, with SIGINT ignored, so that the
    terminal's Ctrl-C does not reach them; such a run is meant to outlive it, and does.
    Launchers' worker processes need nothing else: joblib's loky workers, submitit's tasks and
    Lightning's DDP processes all inherit the launching process's disposition (none ignores
    SIGINT of its own), so every process of a run answers a Ctrl-C alike. Submitit's local
    controller ends a task past its time-out with SIGINT and SIGKILL a second later: a task
    that ignores SIGINT keeps its last periodic checkpoint, as a killed run does. SIGTERM (what
    `kill`, SLURM's time limit and `scancel` send) always saves and stops.
    """
    return [
        signum
        for signum in SIGNAL_NAMES
        if signum != signal.SIGINT or signal.getsignal(signum) != signal.SIG_IGN
    ]


def exit_with(line: str, code: int) -> NoReturn:
    """End the process with its one line on stderr and its exit code."""
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # Exits here, not by an exception: during imports, an exception would be a traceback from
    # wherever the signal came, and a library's bare `except:` could swallow it.
    ignore_signals()  # a second Ctrl-C while this one is said: no second line
    print(f"stopped: {RunStopped(signum, None, -1)}", file=sys.stderr, flush=True)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(128 + signum)  # 130 for SIGINT, 143 for SIGTERM: src.cli.EXIT_SIGNAL


def ignore_signals() -> None:
    """SIGINT and SIGTERM ignored from now on (`handled_signals`): once nothing is left to stop."""
    for signum in handled_signals():
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside (what runs there has nothing left to stop), then the
    handlers of before."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in handled_signals()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_on_signals() -> None:
    """For an entry point's first lines, before its imports (torch and Lightning: seconds):
    Ctrl-C (SIGINT) or SIGTERM ends the process with the one `stopped:` line and exit code
    130/143, instead of a `KeyboardInterrupt` traceback (or, for SIGTERM, no word at all).
    `stop_on_signals` replaces it once the command line is read."""
    for signum in handled_signals():
        signal.signal(signum, _exit_now)


def _stop_now(signum: int, frame: FrameType | None) -> None:
    path = _kept["checkpoint"]
    _kept["signal"] = stop = RunStopped(signum, path, -1, finished=path is not None)
    raise stop


def swallowed_stop() -> RunStopped | None:
    """The stop `stop_on_signals` raised, if the command got past it or ended in another error
    instead: Python drops an exception raised where it cannot propagate (a weakref callback
    that a garbage collection runs, a `__del__`), and a library interrupted mid-update can fail
    on its broken state next (OmegaConf's `'NoneType' object has no attribute ...`). The
    command still ends as stopped, with the signal's exit code."""
    return _kept["signal"]  # type: ignore[return-value]


def _unraisable(info: Any) -> None:
    """Python's report of an exception it drops (the hook found before this one), except a
    stop's: `swallowed_stop` ends the command with its line instead of a traceback."""
    if not isinstance(info.exc_value, RunStopped):
        _kept["unraisable"](info)


def stop_on_signals() -> dict[int, Any]:
    """SIGINT and SIGTERM stop the process at once, wherever it is (`RunStopped`; the files it
    writes are atomic, so none is left half-written). Training replaces this with its own
    handler, which finishes the iteration and saves a checkpoint first (RunCheckpoint).

    SIGINT only where the process did not start with it ignored (`handled_signals`). Returns
    the handlers it replaced."""
    _kept["checkpoint"] = _kept["signal"] = None
    if sys.unraisablehook is not _unraisable:
        _kept["unraisable"], sys.unraisablehook = sys.unraisablehook, _unraisable
    previous = {signum: signal.getsignal(signum) for signum in SIGNAL_NAMES}
    for signum in handled_signals():
        signal.signal(signum, _stop_now)
    return previous


class JobFailed(Exception):
    """A sweep job ended by a known failure: its one `error:` line was already printed."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line, code)  # both in args: it pickles, for launchers in other processes
        self.line = line
        self.code = code

    def __str__(self) -> str:
        return self.line


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    lines = str(err).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__


# Callbacks that became reports run once at the end (conf/reports): their old keys say so.
REPORTS = {
    "callbacks.state_report": "reports.state_tables",
    "callbacks.training_progress_plot": "reports.training_progress",
    "callbacks.first_batch_grid": "reports.first_batch",
    "callbacks.confusion_matrix": "reports.confusion_matrix",
}


def one_line(err: BaseException) -> str:
    """Hydra's composition errors span many lines; keep what names the key or option."""
    text = str(err).split("Config search path:")[0]
    for old, new in REPORTS.items():
        if f"'{old}" in text:
            return f"{old} is no longer a callback but a report: switch it off with {new}=false"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in lines:
            lines.append(first)
    return "; ".join(ln.rstrip(".") for ln in lines).replace(":;", ":")
