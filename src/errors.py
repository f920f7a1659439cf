"""Every failure the project names, and the one line each becomes.

Exit codes (`src.cli`): 0 done; 2 bad input (`ConfigError`, `DataError`, `CheckpointError`: one
`error:` line); 3 training diverged (`TrainingDiverged`); 4 an output could not be written
(`CheckpointWriteError` and any other `OSError`); 130 stopped by SIGINT (Ctrl-C), 143 by SIGTERM
(`RunStopped`); 1 anything unexpected (a bug: the traceback is printed).
"""

from __future__ import annotations

import signal
from pathlib import Path

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


class CheckpointWriteError(OutputWriteError):
    """A checkpoint could not be written (full disk, no permission); the old one is intact."""


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message names the iteration."""


class RunStopped(Exception):
    """Training stopped on a signal; `path` is the checkpoint of the last completed iteration."""

    def __init__(self, signum: int, path: Path | None, iteration: int) -> None:
        self.signum, self.path, self.iteration = signum, path, iteration
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if path is None:
            super().__init__(f"{name} again: stopped at once without saving")
        else:
            super().__init__(f"{name}: stopped after iteration {iteration}; saved {path}")


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


def one_line(err: BaseException) -> str:
    """Hydra's composition errors span many lines; keep what names the key or option."""
    text = str(err).split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in lines:
            lines.append(first)
    return "; ".join(ln.rstrip(".") for ln in lines).replace(":;", ":")
