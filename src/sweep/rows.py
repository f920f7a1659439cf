"""The summary's rows: a job's row, the order of the table, and the plain text tables."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from src.model.module import VALIDATION_METRICS

STATUS_FILE = "sweep_job.json"  # each job's row, in its folder, for launchers in other processes
# The metrics in the summary, in column order, and whether higher is better: the test accuracy,
# those a callback may watch (a fork's own metric too, once listed there), the final loss.
METRICS = {
    "test/acc": True,
    **{key: better == "max" for key, better in VALIDATION_METRICS.items()},
    "train/loss": False,
}


@dataclass
class Row:
    job: int
    values: dict[str, str] = field(default_factory=dict)  # swept key -> value
    overrides: list[str] = field(default_factory=list)
    status: str = "ok"
    error: str = ""
    code: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    wall_s: float | None = None
    run_dir: str = ""
    resume: str = ""  # a sweep run again (src.sweep.resume): "resumed", "skipped" or "rerun"

    @property
    def folder(self) -> str:
        return Path(self.run_dir).name


STATUSES = ("ok", "failed", "stopped", "running")  # running: in another process at a stop
RESUMES = ("", "resumed", "skipped", "rerun")


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def text_map(v: Any) -> bool:
    """Whether `v` is a dict of strings to strings (a row's values; in sweep.json too)."""
    return isinstance(v, dict) and _texts([*v, *v.values()])


# What each field of a saved row may hold.
VALID: dict[str, Callable[[Any], bool]] = {
    "job": lambda v: _whole(v) and v >= 0,
    "values": text_map,
    "overrides": _texts,
    "status": lambda v: v in STATUSES,
    "error": lambda v: isinstance(v, str),
    "code": lambda v: _whole(v) and 0 <= v <= 255,
    "metrics": lambda v: isinstance(v, dict) and _texts([*v]) and all(map(_number, v.values())),
    "wall_s": lambda v: v is None or _number(v),
    "run_dir": lambda v: isinstance(v, str),
    "resume": lambda v: v in RESUMES,
}


def saved_row(saved: Any) -> Row:
    """A job's row from its `sweep_job.json`, read as untrusted data: each field of its type
    (ValueError naming the first that is not), missing ones at Row's defaults, nothing else
    kept."""
    if not isinstance(saved, dict):
        raise ValueError(f"holds a {type(saved).__name__}, not a row")
    found = {}
    for f in fields(Row):
        default = f.default if f.default_factory is MISSING else f.default_factory()
        value = found[f.name] = saved.get(f.name, None if default is MISSING else default)
        if not VALID[f.name](value):
            raise ValueError(f"{f.name}={value!r:.80} is not a valid value")
    return Row(**found)


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The summary's metrics from a job's `metrics.json`."""
    import json

    saved = json.loads((run_dir / "metrics.json").read_text())
    return {k: float(saved[k]) for k in METRICS if isinstance(saved.get(k), (int, float))}


def as_number(text: str) -> float | None:
    """A swept value as a number, where it is one (for sorting and plotting)."""
    try:
        return float(text)
    except ValueError:
        return None


def fmt(value: float | None) -> str:
    """A metric as the tables show it; `-` where there is none."""
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def fmt_time(seconds: float | None) -> str:
    """A job's wall time as the table shows it: seconds, or minutes from two on."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def sort_metric(rows: list[Row], first: str | None = None) -> str | None:
    """The metric the table is sorted by: `first` (the one a search optimises), else the first
    of METRICS the completed jobs have."""
    done = [r for r in rows if r.status == "ok"]
    order = [first, *METRICS] if first in METRICS else METRICS
    return next((m for m in order if any(m in r.metrics for r in done)), None)


def sorted_rows(rows: list[Row], metric: str | None) -> list[Row]:
    """Completed jobs best first by `metric`, then jobs without it, then failed jobs."""

    def key(r: Row) -> tuple:
        value = r.metrics.get(metric) if metric else None
        if value is None or math.isnan(value):
            return (r.status != "ok", 1, 0.0, r.job)
        return (False, 0, -value if METRICS[metric] else value, r.job)

    return sorted(rows, key=key)


def jobs(n: int | None) -> str:
    """`1 job`, `4 jobs`: a count in the summary's lines."""
    return f"{n} job" if n == 1 else f"{n} jobs"
