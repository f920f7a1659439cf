"""A failed job of a sweep: `JobFailed`, raised by `src.entry.run_job` in a sweep, and the line
and exit code the summary records for any failure."""

from __future__ import annotations


class JobFailed(Exception):
    """A sweep job ended by a known failure: its one `error:` line was already printed."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line, code)  # both in args: it pickles, for launchers in other processes
        self.line = line
        self.code = code

    def __str__(self) -> str:
        return self.line


def _failure_of(err: BaseException) -> tuple[str, int]:
    """A failed job's error line and the exit code it would have had on its own."""
    if isinstance(err, JobFailed):
        return err.line, err.code
    lines = str(err).strip().splitlines()
    return f"error: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "), 1
