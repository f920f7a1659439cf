"""A failed job of a sweep: `JobFailed`, raised by `src.cli.run_job` in a sweep, and the line
and exit code the summary records for any failure."""

from __future__ import annotations

from src.errors import JobFailed


def _failure_of(err: BaseException) -> tuple[str, int]:
    """A failed job's error line and the exit code it would have had on its own."""
    if isinstance(err, JobFailed):
        return err.line, err.code
    lines = str(err).strip().splitlines()
    return f"error: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "), 1
