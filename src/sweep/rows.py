"""The summary's rows: a job's row, the order of the table, and the plain text tables."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS_FILE = "sweep_job.json"  # each job's row, in its folder, for launchers in other processes
# The metrics in the summary, in column order, and whether higher is better.
METRICS = {"test/acc": True, "val/acc": True, "train/loss": False}


@dataclass
class Row:
    job: int
    values: dict[str, str]  # swept key -> value
    overrides: list[str]
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


STATUSES = ("ok", "failed", "stopped")
RESUMES = ("", "resumed", "skipped", "rerun")


def saved_row(saved: Any) -> Row:
    """A job's row from its `sweep_job.json`, read as untrusted data: each field of its type
    (ValueError naming the first that is not), nothing else kept."""
    if not isinstance(saved, dict):
        raise ValueError(f"holds a {type(saved).__name__}, not a row")

    def field_of(name: str, ok: Callable[[Any], bool], default: Any = None) -> Any:
        value = saved.get(name, default)
        if not ok(value):
            raise ValueError(f"{name}={value!r:.80} is not a valid value")
        return value

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def texts(v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values()))

    return Row(
        job=field_of("job", lambda v: whole(v) and v >= 0),
        values=field_of("values", texts, {}),
        overrides=field_of(
            "overrides", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), []
        ),  # fmt: skip
        status=field_of("status", lambda v: v in STATUSES, "ok"),
        error=field_of("error", lambda v: isinstance(v, str), ""),
        code=field_of("code", lambda v: whole(v) and 0 <= v <= 255, 0),
        metrics=field_of(
            "metrics",
            lambda v: (
                isinstance(v, dict) and all(isinstance(k, str) and number(x) for k, x in v.items())
            ),
            {},
        ),  # fmt: skip
        wall_s=field_of("wall_s", lambda v: v is None or number(v)),
        run_dir=field_of("run_dir", lambda v: isinstance(v, str), ""),
        resume=field_of("resume", lambda v: v in RESUMES, ""),
    )


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


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric as the tables show it; `-` where there is none."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_time(seconds: float | None) -> str:
    """A job's wall time as the table shows it: seconds, or minutes from two on."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def sort_metric(rows: list[Row]) -> str | None:
    done = [r for r in rows if r.status == "ok"]
    return next((m for m in METRICS if any(m in r.metrics for r in done)), None)


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
