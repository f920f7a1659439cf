"""The Hydra callback `SweepSummary` (`hydra.callbacks.sweep_summary` in conf/hydra/default.yaml):
a row for every job, failed jobs that do not stop the sweep, and at the end `summary.csv`, the
printed tables, `summary.txt` and the seed tables (docs/sweeps-and-clusters.md).

A failed job does not stop the sweep. In a sweep `src.cli.run_job` prints the job's one `error:`
line and raises `JobFailed`; Hydra records the job as FAILED and calls `on_job_end`. Hydra's basic
sweeper would re-raise the first failure once every job of the batch has run, skipping
`on_multirun_end` and printing a traceback, so `on_job_end` records the failure and marks Hydra's
record of the job completed with no return value (only for the basic sweeper; Optuna's records
the trial as failed and goes on). After the summary, a sweep with failed jobs ends with one
`error:` line naming them, and the exit code every failed job would have had on its own when they
share one (2, 3 or 4; see `src.cli`), else 1. A job stopped by SIGINT or SIGTERM (130, 143) stops
the sweep there, after the summary of the jobs run so far.

Launchers that run jobs in other processes (joblib's loky workers; submitit: one process a job)
call `on_job_start`/`on_job_end` there, on a copy of this callback pickled after
`on_multirun_start`; only the returned JobReturn comes back. So every job also writes its row to
`sweep_job.json` in its folder, tagged with the sweep's id, and `on_multirun_end` (in the
launching process) adds the rows it did not see from those files. A job stopped by a signal in
another process cannot stop jobs already launched: the summary marks it `stopped` and the sweep
exits with its code once the others end.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.compat import BASIC_SWEEPER, end_searches_without_result, job_error, keep_lost_jobs
from src.console import text_table
from src.errors import JobFailed, exit_with, keep_checkpoint, signals_ignored
from src.io import write_csv, write_text
from src.sweep import naming, resume
from src.sweep.naming import (
    DEFAULT_SUBDIR,
    Plan,
    job_name,
    job_num,
    plan_of,
    register_resolvers,
    short_names,
    shown,
    swept_values,
)
from src.sweep.rows import (
    METRICS,
    RESUMES,
    STATUS_FILE,
    STATUSES,
    Row,
    fmt,
    fmt_time,
    jobs,
    read_metrics,
    saved_row,
    sort_metric,
    sorted_rows,
)
from src.sweep.seeds import SEED_KEY, over_seeds, plot_seeds, seed_groups, stats

log = logging.getLogger(__package__)  # "src.sweep": the name its log lines had before the split

# Exit codes of a job stopped by a signal (src.cli.EXIT_SIGNAL): they stop the whole sweep.
STOP_CODES = {130, 143}

# The sweep this process is launching, if any (`stop_launch`).
launching: SweepSummary | None = None


def stop_launch(name: str, code: int) -> None:
    """A signal (`name`) stopped the process that launches a sweep: between its jobs, or while
    it waits for those of other processes (joblib's workers, which the signal also reaches, or
    which joblib then ends). The summary of the jobs that ended, then the stop line and `code`;
    nothing where this process launches no sweep."""
    summary = launching
    if summary is not None and summary.pid == os.getpid() and summary.sweep_dir is not None:
        summary.gather(summary.sweep_dir)
        summary.gather_unsaved(summary.sweep_dir, f"stopped: {name}: stopped with the sweep", code)
        summary.finish(summary.sweep_dir, interrupted=(name, code))


class SweepSummary(Callback):
    """Hydra callback (`hydra.callbacks.sweep_summary` in conf/hydra/default.yaml)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.planned: int | None = None  # jobs the sweep launches, where known
        self.rows: dict[int, Row] = {}
        self.started: dict[int, float] = {}
        self.sweep_id = ""  # tags this sweep's status files (a reused sweep folder has old ones)
        self.pid = os.getpid()  # the launching process: jobs elsewhere run on pickled copies
        self.checked: tuple[str, str] | None = None  # resume.checked: the sweep jobs continue
        self.sweep_dir: Path | None = None
        self.plan = Plan()  # naming.current, in a job's own process too
        self.metric: str | None = None  # a search's optimized_metric: the table's order
        self.detached = False  # its launcher's jobs outlive this process (submitit's)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled in a job's own process (joblib, submitit), where Hydra resolves the job's
        # folder, `${sweep_subdir:}`, before the job runs any code of ours.
        self.__dict__.update(state)
        naming.current = self.plan
        resume.checked = self.checked
        register_resolvers()

    # Hydra's hooks. Hydra turns an exception here into a warning; none may hide the results.

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global launching
        plan = naming.current = self.plan = plan_of(config)
        self.keys, self.planned = list(plan.keys), plan.jobs
        self.rows, self.started = {}, {}
        self.sweep_id, self.pid = uuid.uuid4().hex, os.getpid()
        self.metric = OmegaConf.select(config, "optimized_metric", default=None)
        sweep = OmegaConf.select(config, "hydra.sweep", default=None) or {}
        subdir = OmegaConf.to_container(sweep, resolve=False).get("subdir") if sweep else None
        if subdir is not None and "${" not in str(subdir) and plan.jobs != 1:  # one folder
            why = "names one folder for every job: make it name each job's"
            exit_with(f"error: hydra.sweep.subdir={subdir} {why} (as {DEFAULT_SUBDIR} does)", 2)
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        if sweep_dir:  # the same sweep again continues (src.sweep.resume); any other: exit 2
            self.sweep_dir = Path(str(sweep_dir))
            self.sweep_id = resume.start(config, self.sweep_dir)
            plan.width = naming.width_used(self.sweep_dir)  # its folders' names are kept
        self.checked = resume.checked
        launching = self  # a signal to this process from now on ends with the summary
        self.detached = "hydra_submitit" in str(OmegaConf.select(config, "hydra.launcher._target_"))
        if self.detached:
            keep_lost_jobs()  # a job killed with no result is a failed row, not the sweep's end
        if "hydra_optuna_sweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_")):
            end_searches_without_result()  # every trial failed: a summary, not a traceback

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _multirun(config):
            self.started[job_num(config)] = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _multirun(config):
            return
        from hydra.core.utils import JobStatus

        num, failed = job_num(config), job_return.status == JobStatus.FAILED
        run_dir = str(OmegaConf.select(config, "hydra.runtime.output_dir") or "")
        how, saved = resume.outcomes.pop(run_dir, ("", None))
        held, how = how == "held", "" if how == "held" else how
        if how == "skipped" and saved is not None and saved.status != "ok":  # kept as it was
            saved.resume = how
            self.rows[num] = saved
            self.save_row(saved)
            return
        row = self.rows[num] = Row(num, resume=how)
        if failed:
            row.error, row.code = _failure_of(job_error(job_return))
            row.status = "stopped" if row.code in STOP_CODES else "failed"
            if OmegaConf.select(config, "hydra.sweeper._target_") == BASIC_SWEEPER:
                # Recorded in the summary: the sweeper must not re-raise it (package docstring).
                job_return.status, job_return.return_value = JobStatus.COMPLETED, None
                # The failed job's trainer is free now: its progress bar closes with the job.
                gc.collect()
        started = self.started.pop(num, None)
        row.wall_s = None if started is None else time.perf_counter() - started
        if how == "skipped":  # its time is that of the launch that ran it
            row.wall_s = saved.wall_s if saved is not None else None
        elif how == "resumed" and row.wall_s is not None and saved and saved.wall_s is not None:
            row.wall_s += saved.wall_s  # and the stopped start's, as its own elapsed time counts
        row.run_dir = run_dir
        try:
            row.overrides = [str(o) for o in (job_return.overrides or [])]
            row.values = swept_values(row.overrides, self.keys)
            if not failed:
                row.metrics = read_metrics(Path(row.run_dir))
        except Exception as err:  # the row stays, with what is known
            log.warning("Job %d: incomplete row in the sweep summary (%s).", num, err)
        if not held or not (Path(run_dir) / STATUS_FILE).is_file():
            self.save_row(row)  # a folder another job or start holds keeps that one's row
        if row.code in STOP_CODES and os.getpid() == self.pid:  # elsewhere: package docstring
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
            write_text(Path(row.run_dir) / STATUS_FILE, text + "\n")
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
                # Untrusted (a reused or copied sweep folder): checked field by field.
                if not isinstance(saved, dict) or saved.pop("sweep", None) != self.sweep_id:
                    continue
                row = saved_row(saved)
                if row.job not in self.rows:
                    self.rows[row.job] = row
            except (OSError, ValueError, TypeError, KeyError, RecursionError) as err:
                print(f"warning: sweep summary: {path}: not used ({err})", file=sys.stderr)

    def gather_unsaved(self, sweep_dir: Path, error: str, code: int) -> None:
        """A row for each job folder without one: a job the stop caught in another process
        (joblib ends its workers before they write it), `stopped`, `ok` where it had finished
        (its metrics.json), or `running` where a process still holds its folder."""
        for hydra in sorted(sweep_dir.glob("*/.hydra/hydra.yaml")):  # its number and overrides
            try:
                saved, folder = OmegaConf.load(hydra).hydra, hydra.parent.parent
                num = saved.job.num
                if not isinstance(num, int) or num in self.rows:
                    continue
                row = Row(num, run_dir=str(folder), status="stopped", error=error, code=code)
                row.overrides = [str(o) for o in saved.overrides.task]
                row.values = swept_values(row.overrides, self.keys)
                if (folder / "metrics.json").is_file():
                    row.status, row.error, row.code = "ok", "", 0
                    row.metrics = read_metrics(folder)
                elif self.detached and (holder := resume.holder(folder)):  # runs on
                    row.status, row.code = "running", 0
                    row.error = f"still run by {holder}: this command stopped waiting for it"
                self.rows[num] = row
            except Exception as err:  # a folder that is not a job's: not a row
                print(f"warning: sweep summary: {hydra}: not used ({err})", file=sys.stderr)

    # The outputs

    def finish(
        self,
        sweep_dir: Path,
        stopped: Row | None = None,
        interrupted: tuple[str, int] | None = None,
    ) -> None:
        """Write and print everything, then end a sweep with failures with its exit code; one
        stopped by a signal, in a job (`stopped`) or in this process (`interrupted`: the
        signal's name and exit code), with that."""
        global launching
        launching = None  # once: a second signal while an interrupted sweep's summary is
        # written ends it at once; otherwise the jobs have ended, and a signal has nothing left
        # to stop (it cost the summary, or turned a finished sweep into a stopped one)
        keep_checkpoint(None)  # a stop from now on is the sweep's, not its last job's
        with contextlib.nullcontext() if interrupted else signals_ignored():
            self._finish(sweep_dir, stopped, interrupted)

    def _finish(self, sweep_dir: Path, stopped: Row | None, interrupted: Any) -> None:
        # A failed job's trainer lingers in reference cycles until collected; its progress bar
        # then prints its last state: let that happen before the tables, not after them.
        gc.collect()
        rows = [self.rows[k] for k in sorted(self.rows)]
        text: list[str] = []
        unwritten: list[OSError] = []  # a failed write is exit code 4, after the other outputs
        for step in (self.write_csv, self.summary_text, self.seeds):
            try:
                part = step(sweep_dir, rows)
            except OSError as err:
                unwritten.append(err)
                continue
            except Exception as err:  # one broken output must not hide the others
                print(f"warning: sweep summary: {step.__name__} failed: {err}", file=sys.stderr)
                continue
            if part:
                print(f"\n{part}", flush=True)
                text.append(part)
        if text:
            try:
                write_text(sweep_dir / "summary.txt", "\n\n".join(text) + "\n")
            except OSError as err:
                unwritten.append(err)
        summary = sweep_dir / "summary.csv"
        if interrupted is not None:
            name, code = interrupted
            done = sum(r.status not in ("stopped", "running") for r in rows)
            ended = f"{done} of {jobs(self.planned)}" if self.planned else jobs(done)
            left = done < (self.planned or done + 1)  # unknown: there may be more
            again = "; run the same command again to resume it" if left else ""
            if running := sum(r.status == "running" for r in rows):
                ended += f" ended, {running} still running in other processes"
                again = "; run the same command again once they end, to resume it"
            else:
                ended += " ended"
            exit_with(f"stopped: {name}: the sweep stops, {ended} (see {summary}){again}", code)
        if stopped is not None:
            left = f" of {self.planned}" if self.planned else ""
            after = f"job {stopped.job}{left} ({stopped.folder})"
            exit_with(
                f"stopped: the sweep stops after {after}; see {summary}; run the same command "
                "again to resume it",
                stopped.code,
            )
        failed = [r for r in rows if r.status != "ok"]
        if failed:
            codes = {r.code for r in failed}
            names = ", ".join(r.folder or str(r.job) for r in failed)
            line = f"error: {len(failed)} of {jobs(len(rows))} failed ({names}); see {summary}"
            exit_with(line, codes.pop() if len(codes) == 1 else 1)
        if unwritten:  # 4: src.cli.EXIT_WRITE_FAILED (src.sweep sits below src.cli)
            exit_with(f"error: sweep summary: {unwritten[0]}", 4)

    def write_csv(self, sweep_dir: Path, rows: list[Row]) -> str:
        header = ["job", "name", *self.keys, "status", "error", *METRICS, "wall_time_s"]
        header += ["overrides", "run_dir", "resume"]
        table = [
            [r.job, job_name(r.values), *(r.values.get(k, "") for k in self.keys)]
            + [r.status, r.error, *(r.metrics.get(m, "") for m in METRICS)]
            + ["" if r.wall_s is None else round(r.wall_s, 2), " ".join(r.overrides)]
            + [r.run_dir, r.resume]
            for r in rows
        ]
        write_csv(sweep_dir / "summary.csv", header, table)
        return ""

    def summary_text(self, sweep_dir: Path, rows: list[Row]) -> str:
        metric = sort_metric(rows, self.metric)
        columns = [m for m in METRICS if any(m in r.metrics for r in rows)]
        names = short_names(self.keys)
        marks = [s for s in RESUMES if s and any(r.resume == s for r in rows)]  # a resumed sweep
        header = ["job", *(names[k] for k in self.keys), "status", *columns, "time", "folder"]
        right = {0, *range(len(self.keys) + 2, len(self.keys) + 3 + len(columns))}
        cells = [
            [str(r.job), *(shown(r.values.get(k, "")) for k in self.keys), r.status]
            + [fmt(r.metrics.get(m)) for m in columns]
            + [fmt_time(r.wall_s), r.folder]
            + ([r.resume] if marks else [])
            for r in sorted_rows(rows, metric)
        ]
        header += ["this run"] if marks else []
        counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
        run = f"{len(rows)} of {jobs(self.planned)} run" if len(rows) < (self.planned or 0) else ""
        title = f"Sweep: {run or jobs(len(rows))}, " + ", ".join(
            f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "failed")
        )
        if marks:
            title += f" ({', '.join(f'{sum(r.resume == s for r in rows)} {s}' for s in marks)})"
        if metric:
            title += f"; by {metric}, {'highest' if METRICS[metric] else 'lowest'} first"
        title += f"\n  in {sweep_dir}"
        errors = [f"  job {r.job} ({r.folder}): {r.error}" for r in rows if r.status != "ok"]
        return "\n".join([title, text_table(header, cells, right), *errors])

    def seeds(self, sweep_dir: Path, rows: list[Row]) -> str:
        groups = seed_groups(rows, self.keys) if SEED_KEY in self.keys else []
        if not any(g.seeds for g in groups):  # no seed swept, or no job completed yet
            return ""
        others = [k for k in self.keys if k != SEED_KEY]
        metrics = [m for m in METRICS if any(m in g.metrics for g in groups)]
        names = short_names(others)
        columns = ["metric", "mean", "std", "min", "max", "n"]
        header = [*(names[k] for k in others), *columns]
        cells, records = [], []
        for g in groups:
            for i, m in enumerate(metrics or ["-"]):
                s = stats(g.metrics.get(m, []))
                records.append([*g.values.values(), m, *s.values()])
                label = [shown(v) for v in g.values.values()] if i == 0 else [""] * len(others)
                numbers = [fmt(s[k]) for k in ("mean", "std", "min", "max")]
                cells.append([*label, m, *numbers, str(s["n"])])
        write_csv(sweep_dir / "seeds.csv", [*others, *columns], records)
        note = ""
        try:
            plot_seeds(groups, others, metrics, sweep_dir / "sweep.png")
        except OSError:
            raise  # a failed write: exit code 4 (finish)
        except Exception as err:  # the tables are written: a missing figure is one line
            note = f"\n  (sweep.png not drawn: {err})"
        by = f"grouped by {', '.join(names[k] for k in others)}; " if others else ""
        title = f"{over_seeds(groups)} ({by}completed jobs only; std: sample standard deviation)"
        right = set(range(len(others) + 1, len(header)))
        return "\n".join([title, text_table(header, cells, right)]) + note


def _failure_of(err: BaseException) -> tuple[str, int]:
    """A failed job's error line and the exit code it would have had on its own."""
    if isinstance(err, JobFailed):
        return err.line, err.code
    lines = str(err).strip().splitlines()
    return f"error: {type(err).__name__}: {lines[0] if lines else ''}".rstrip(": "), 1


def _multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN
