"""Sweeps people can read: `python -m src.train --multirun a=1,2 seed=0,1` ends with a summary.

In the sweep folder, at the end of every multirun:

- `summary.csv`: one row a job (job number, its name, one column per swept key, its overrides,
  `ok`/`failed` with the error line, test/acc, val/acc, final train/loss, wall time, run folder);
  the same table is printed, sorted by the metric (test/acc, else val/acc, else train/loss),
  and kept in `summary.txt` with the tables below.
- When the sweep varies `seed`: `seeds.csv`, a second table grouping the jobs by their other
  swept overrides (mean, sample standard deviation, min, max and n over the seeds that
  completed), and `sweep.png` (each metric against the swept value: one point per seed, and
  the mean with its standard deviation).

Each job's folder is `<job number>_<swept key=value,...>` (`3_lr=0.05,seed=1`): only the keys
the sweep varies (command line and `hydra.sweeper.params`, so an Optuna search's too), each by
its last name unless two would read the same, paths by their last component, sampled floats to
4 significant digits, cut to `MAX_NAME` characters; the number is zero-padded when the number of
jobs is known. Point TensorBoard at the sweep folder and its run list shows these names.

A failed job does not stop the sweep. In a sweep `src.entry.run_job` prints the job's one
`error:` line and raises `JobFailed`; Hydra records the job as FAILED and calls `on_job_end`.
Hydra's basic sweeper would re-raise the first failure once every job of the batch has run,
skipping `on_multirun_end` and printing a traceback, so `on_job_end` records the failure and
marks Hydra's record of the job completed with no return value (only for the basic sweeper;
another sweeper's own failure handling is left alone: Optuna's records the trial as failed and
goes on). After the summary, a sweep with failed jobs ends with one `error:` line naming them,
and exit code:

- the code every failed job would have exited with on its own, when they all share one
  (2 bad input, 3 diverged, 4 an output could not be written; see `src.entry`);
- 1 when the failures differ, or one was unexpected (its traceback is printed when it fails).

A job stopped by SIGINT or SIGTERM (exit code 130 or 143 on its own) stops the sweep there:
the summary of the jobs run so far is written and printed, and the sweep exits with that code.

Launchers that run jobs in other processes (`hydra/launcher=joblib`: loky worker processes;
`submitit_local`/`submitit_slurm`: one process a job) call `on_job_start`/`on_job_end` there, on
a copy of this callback that was pickled after `on_multirun_start`; only the returned JobReturn
comes back. So every job also writes its row to `sweep_job.json` in its folder, tagged with the
sweep's id, and `on_multirun_end` (in the launching process) adds the rows it did not see from
those files. A job stopped by a signal in another process cannot stop jobs already launched: the
summary marks it `stopped` and the sweep exits with its code once the others end.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Exit codes of a job stopped by a signal (src.entry.EXIT_SIGNAL): they stop the whole sweep.
STOP_CODES = {130, 143}
# The metrics in the summary, in column order, and whether higher is better.
METRICS = {"test/acc": True, "val/acc": True, "train/loss": False}
SEED_KEY = "seed"
MAX_NAME = 100  # characters of a job folder's name after the number (names are ASCII)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
STATUS_FILE = "sweep_job.json"  # each job's row, in its folder, for launchers in other processes


class JobFailed(Exception):
    """A sweep job ended by a known failure: its one `error:` line was already printed."""

    def __init__(self, line: str, code: int) -> None:
        super().__init__(line, code)  # both in args: it pickles, for launchers in other processes
        self.line = line
        self.code = code

    def __str__(self) -> str:
        return self.line


# -- Which keys the sweep varies, and the job folder names built from them --------------------


@dataclass
class _Plan:
    keys: list[str] = field(default_factory=list)  # swept keys, in command-line order
    jobs: int | None = None  # how many jobs the sweep launches, where known


_plan: _Plan | None = None  # set by on_multirun_start; read by the job folder resolver


def _parse(lines: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def plan_of(master: DictConfig) -> _Plan:
    """The swept keys of a multirun config (command line and `hydra.sweeper.params`)."""
    lines = list(OmegaConf.select(master, "hydra.overrides.task", default=None) or [])
    params = OmegaConf.select(master, "hydra.sweeper.params", default=None) or {}
    lines += [f"{key}={value}" for key, value in params.items()]
    plan, jobs = _Plan(), 1
    for o in _parse(lines):
        if not o.is_sweep_override() or o.key_or_group in plan.keys:
            continue
        plan.keys.append(o.key_or_group)
        try:
            jobs *= len(list(o.sweep_string_iterator()))
        except Exception:  # an interval or other sweep without a fixed list of values
            jobs = 0
    plan.jobs = jobs or None
    trials = OmegaConf.select(master, "hydra.sweeper.n_trials", default=None)  # e.g. Optuna's
    if plan.jobs is None and isinstance(trials, int) and trials > 0:
        plan.jobs = trials
    return plan


def _value(o: Any) -> str:
    """An override's value as typed, without the quotes that protect it."""
    value = o.value()
    return value if isinstance(value, str) else o.get_value_element_as_str()


def short_names(keys: list[str]) -> dict[str, str]:
    """`optimizer.lr` -> `lr`, unless another key would read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def swept_values(overrides: Iterable[str], keys: list[str]) -> dict[str, str]:
    """`{key: value}` of a job's overrides, for the swept keys, in the sweep's order."""
    found = {o.key_or_group: _value(o) for o in _parse(overrides) if not o.is_delete()}
    return {k: found[k] for k in keys if k in found}


def shown(value: str) -> str:
    """A value as the names and tables show it: a sampled 0.0034567890123 as 0.003457."""
    if re.fullmatch(r"[-+]?\d*\.\d{7,}(e[-+]?\d+)?", value):  # more digits than anyone types
        return f"{float(value):.4g}"
    return value


def _readable(value: str) -> str:
    value = shown(value)
    if "/" in value.rstrip("/"):
        value = value.rstrip("/").rsplit("/", 1)[-1]  # a path: its last component
    return re.sub(r"[^\w.+\-~@%]+", "_", value, flags=re.ASCII).strip("_") or "_"


def job_name(values: dict[str, str]) -> str:
    """`lr=0.05,seed=1`: a folder name (no slash, ASCII, at most MAX_NAME characters)."""
    names = short_names(list(values))
    name = ",".join(f"{_readable(names[k])}={_readable(v)}" for k, v in values.items())
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}~{digest}"
    return name


def _plan_from_sweep_folder(root: DictConfig) -> _Plan:
    """Where the callback did not run in this process: the sweep's saved `multirun.yaml`."""
    try:
        saved = Path(str(OmegaConf.select(root, "hydra.sweep.dir"))) / "multirun.yaml"
        return plan_of(OmegaConf.load(saved))
    except Exception:
        return _Plan()


def sweep_subdir(*, _root_: DictConfig) -> str:
    """`hydra.sweep.subdir`: `<job number>_<swept key=value,...>`, or the number alone."""
    num = int(OmegaConf.select(_root_, "hydra.job.num", default=0) or 0)
    plan = _plan or _plan_from_sweep_folder(_root_)
    width = len(str(plan.jobs - 1)) if plan.jobs else 1
    overrides = OmegaConf.select(_root_, "hydra.overrides.task", default=None) or []
    name = job_name(swept_values(overrides, plan.keys))
    return f"{num:0{width}d}_{name}" if name else f"{num:0{width}d}"


OmegaConf.register_new_resolver("sweep_subdir", sweep_subdir, replace=True)


# -- The summary --------------------------------------------------------------------------------


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

    @property
    def folder(self) -> str:
        return Path(self.run_dir).name


def _failure_of(err: BaseException) -> tuple[str, int]:
    """A failed job's error line and the exit code it would have had on its own."""
    if isinstance(err, JobFailed):
        return err.line, err.code
    lines = str(err).strip().splitlines()
    return f"error: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "), 1


def _read_metrics(run_dir: Path) -> dict[str, float]:
    import json

    saved = json.loads((run_dir / "metrics.json").read_text())
    return {k: float(saved[k]) for k in METRICS if isinstance(saved.get(k), (int, float))}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def text_table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """A plain aligned table: reads the same on a terminal and in a log file."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  " + "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


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


@dataclass
class Group:
    values: dict[str, str]  # the other swept keys
    seeds: list[str]
    metrics: dict[str, list[float]]


def seed_groups(rows: list[Row], keys: list[str]) -> list[Group]:
    """Completed jobs grouped by their swept keys other than `seed`, in sweep order."""
    others = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, Group] = {}
    for r in sorted(rows, key=lambda r: r.job):
        ident = tuple(r.values.get(k, "") for k in others)
        g = groups.setdefault(ident, Group(dict(zip(others, ident)), [], {}))
        if r.status != "ok":
            continue
        g.seeds.append(r.values.get(SEED_KEY, ""))
        for m, v in r.metrics.items():
            if not math.isnan(v):
                g.metrics.setdefault(m, []).append(v)
    return list(groups.values())


def stats(values: list[float]) -> dict[str, float | int | None]:
    """mean, sample standard deviation (none for one value), min, max, n."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {
        "mean": statistics.fmean(values),
        "std": std,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks.sweep_summary` in conf/hydra/default.yaml)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.planned: int | None = None  # jobs the sweep launches, where known
        self.rows: dict[int, Row] = {}
        self.started: dict[int, float] = {}
        self.sweep_id = ""  # tags this sweep's status files (a reused sweep folder has old ones)
        self.pid = os.getpid()  # the launching process: jobs elsewhere run on pickled copies

    # Hydra's hooks. Hydra turns an exception here into a warning; none may hide the results.

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _plan
        _plan = plan_of(config)
        self.keys, self.planned = list(_plan.keys), _plan.jobs
        self.rows, self.started = {}, {}
        self.sweep_id, self.pid = uuid.uuid4().hex, os.getpid()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _multirun(config):
            self.started[_num(config)] = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _multirun(config):
            return
        from hydra.core.utils import JobStatus

        num, failed = _num(config), job_return.status == JobStatus.FAILED
        row = self.rows[num] = Row(num, {}, [])
        if failed:
            row.error, row.code = _failure_of(job_return._return_value)
            row.status = "stopped" if row.code in STOP_CODES else "failed"
            if OmegaConf.select(config, "hydra.sweeper._target_") == BASIC_SWEEPER:
                # Recorded in the summary: the sweeper must not re-raise it (see the docstring).
                job_return.status, job_return.return_value = JobStatus.COMPLETED, None
                # The failed job's trainer is free now: its progress bar closes with the job.
                gc.collect()
        started = self.started.pop(num, None)
        row.wall_s = None if started is None else time.perf_counter() - started
        row.run_dir = str(OmegaConf.select(config, "hydra.runtime.output_dir") or "")
        try:
            row.overrides = [str(o) for o in (job_return.overrides or [])]
            row.values = swept_values(row.overrides, self.keys)
            if not failed:
                row.metrics = _read_metrics(Path(row.run_dir))
        except Exception as err:  # the row stays, with what is known
            log.warning("Job %d: incomplete row in the sweep summary (%s).", num, err)
        self.save_row(row)
        if row.code in STOP_CODES and os.getpid() == self.pid:  # elsewhere: see the docstring
            self.finish(Path(str(config.hydra.sweep.dir)), stopped=row)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self.gather(sweep_dir)
        stopped = [self.rows[k] for k in sorted(self.rows) if self.rows[k].status == "stopped"]
        self.finish(sweep_dir, stopped=stopped[0] if stopped else None)

    # Rows of jobs run in other processes

    def save_row(self, row: Row) -> None:
        if not row.run_dir:
            return
        try:
            text = json.dumps({"sweep": self.sweep_id, **asdict(row)}, indent=2)
            (Path(row.run_dir) / STATUS_FILE).write_text(text + "\n")
        except (OSError, TypeError, ValueError) as err:
            log.warning("Job %d: %s not written (%s).", row.job, STATUS_FILE, err)

    def gather(self, sweep_dir: Path) -> None:
        """Add the rows of this sweep's jobs that ran in other processes, from their files."""
        try:
            paths = sorted(sweep_dir.rglob(STATUS_FILE))
        except OSError:
            return
        for path in paths:
            try:
                saved = json.loads(path.read_text())
                if saved.pop("sweep", None) != self.sweep_id or saved["job"] in self.rows:
                    continue
                self.rows[int(saved["job"])] = Row(**saved)
            except (OSError, ValueError, TypeError, KeyError) as err:
                print(f"warning: sweep summary: {path}: {err}", file=sys.stderr)

    # The outputs

    def finish(self, sweep_dir: Path, stopped: Row | None = None) -> None:
        """Write and print everything, then end a sweep with failures with its exit code."""
        # A failed job's trainer lingers in reference cycles until collected; its progress bar
        # then prints its last state: let that happen before the tables, not after them.
        gc.collect()
        rows = [self.rows[k] for k in sorted(self.rows)]
        text: list[str] = []
        for step in (self.write_csv, self.summary_text, self.seeds):
            try:
                part = step(sweep_dir, rows)
            except Exception as err:  # one broken output must not hide the others
                print(f"warning: sweep summary: {step.__name__} failed: {err}", file=sys.stderr)
                continue
            if part:
                print(f"\n{part}", flush=True)
                text.append(part)
        if text:
            try:
                (sweep_dir / "summary.txt").write_text("\n\n".join(text) + "\n")
            except OSError as err:
                print(f"warning: sweep summary: {err}", file=sys.stderr)
        summary = sweep_dir / "summary.csv"
        if stopped is not None:
            left = f" of {self.planned}" if self.planned else ""
            print(
                f"stopped: the sweep stops after job {stopped.job}{left} ({stopped.folder}); "
                f"see {summary}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(stopped.code)
        failed = [r for r in rows if r.status != "ok"]
        if failed:
            codes = {r.code for r in failed}
            names = ", ".join(r.folder or str(r.job) for r in failed)
            print(
                f"error: {len(failed)} of {_jobs(len(rows))} failed ({names}); see {summary}",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(codes.pop() if len(codes) == 1 else 1)

    def write_csv(self, sweep_dir: Path, rows: list[Row]) -> str:
        header = ["job", "name", *self.keys, "status", "error", *METRICS, "wall_time_s"]
        header += ["overrides", "run_dir"]
        with open(sweep_dir / "summary.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for r in rows:
                writer.writerow(
                    [r.job, job_name(r.values), *(r.values.get(k, "") for k in self.keys)]
                    + [r.status, r.error, *(r.metrics.get(m, "") for m in METRICS)]
                    + ["" if r.wall_s is None else round(r.wall_s, 2), " ".join(r.overrides)]
                    + [r.run_dir]
                )
        return ""

    def summary_text(self, sweep_dir: Path, rows: list[Row]) -> str:
        metric = sort_metric(rows)
        columns = [m for m in METRICS if any(m in r.metrics for r in rows)]
        names = short_names(self.keys)
        header = ["job", *(names[k] for k in self.keys), "status", *columns, "time", "folder"]
        right = {0, *range(len(self.keys) + 2, len(self.keys) + 3 + len(columns))}
        cells = [
            [str(r.job), *(shown(r.values.get(k, "")) for k in self.keys), r.status]
            + [_fmt(r.metrics.get(m)) for m in columns]
            + [_time(r.wall_s), r.folder]
            for r in sorted_rows(rows, metric)
        ]
        counts = {s: sum(r.status == s for r in rows) for s in ("ok", "failed", "stopped")}
        run = f"{len(rows)} of {_jobs(self.planned)} run" if len(rows) < (self.planned or 0) else ""
        title = f"Sweep: {run or _jobs(len(rows))}, " + ", ".join(
            f"{n} {s}" for s, n in counts.items() if n or s != "stopped"
        )
        if metric:
            title += f"; by {metric}, {'highest' if METRICS[metric] else 'lowest'} first"
        title += f"\n  in {sweep_dir}"
        errors = [f"  job {r.job} ({r.folder}): {r.error}" for r in rows if r.status != "ok"]
        return "\n".join([title, text_table(header, cells, right), *errors])

    def seeds(self, sweep_dir: Path, rows: list[Row]) -> str:
        if SEED_KEY not in self.keys:
            return ""
        groups = seed_groups(rows, self.keys)
        others = [k for k in self.keys if k != SEED_KEY]
        metrics = [m for m in METRICS if any(m in g.metrics for g in groups)]
        names = short_names(others)
        header = [*(names[k] for k in others), "metric", "mean", "std", "min", "max", "n"]
        cells, records = [], []
        for g in groups:
            for i, m in enumerate(metrics or ["-"]):
                s = stats(g.metrics.get(m, []))
                records.append([*g.values.values(), m, *s.values()])
                label = [shown(v) for v in g.values.values()] if i == 0 else [""] * len(others)
                numbers = [_fmt(s[k]) for k in ("mean", "std", "min", "max")]
                cells.append([*label, m, *numbers, str(s["n"])])
        with open(sweep_dir / "seeds.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*others, "metric", "mean", "std", "min", "max", "n"])
            writer.writerows([["" if v is None else v for v in rec] for rec in records])
        note = ""
        try:
            plot_seeds(groups, others, metrics, sweep_dir / "sweep.png")
        except Exception as err:  # the tables are written: a missing figure is one line
            note = f"\n  (sweep.png not drawn: {err})"
        seeds = sorted({s for g in groups for s in g.seeds}, key=_seed_order)
        by = f"grouped by {', '.join(names[k] for k in others)}; " if others else ""
        title = (
            f"Over {SEED_KEY}={','.join(seeds)} ({by}completed jobs only; std: sample standard "
            "deviation)"
        )
        right = set(range(len(others) + 1, len(header)))
        return "\n".join([title, text_table(header, cells, right)]) + note


def _seed_order(seed: str) -> tuple:
    return (_number(seed) is None, _number(seed) or 0.0, seed)


def _jobs(n: int | None) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _num(config: DictConfig) -> int:
    return int(OmegaConf.select(config, "hydra.job.num", default=0) or 0)


def plot_seeds(groups: list[Group], keys: list[str], metrics: list[str], path: Path) -> None:
    """Each metric against the swept value(s): one point per seed, and the mean with its std."""
    from matplotlib.figure import Figure  # no pyplot: files only, whatever the backend

    if not metrics:
        raise ValueError("no job completed with a metric")
    names = short_names(keys)
    labels = [",".join(f"{names[k]}={v}" for k, v in g.values.items()) or "all" for g in groups]
    numeric = [_number(g.values[keys[0]]) for g in groups] if len(keys) == 1 else []
    use_numbers = bool(numeric) and all(x is not None for x in numeric)
    xs = numeric if use_numbers else list(range(len(groups)))
    fig = Figure(figsize=(4.5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        means = [(x, stats(g.metrics.get(m, []))) for x, g in zip(xs, groups)]
        means = [(x, s) for x, s in means if s["n"]]
        ax.errorbar(
            [x for x, _ in means],
            [s["mean"] for _, s in means],
            yerr=[s["std"] or 0.0 for _, s in means],
            color="tab:red",
            marker="o",
            capsize=4,
            label="mean ± std",
            zorder=2,
        )
        for x, g in zip(xs, groups):
            ys = g.metrics.get(m, [])
            ax.scatter([x] * len(ys), ys, s=22, color="tab:blue", label="each seed", zorder=3)
        if use_numbers:
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(names[keys[0]])
        else:
            ax.set_xticks(xs, labels, rotation=30 if len(groups) > 3 else 0)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        handles, titles = ax.get_legend_handles_labels()
        unique = dict(zip(titles, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    seeds = sorted({s for g in groups for s in g.seeds}, key=_seed_order)
    fig.suptitle(f"Over {SEED_KEY}={','.join(seeds)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
