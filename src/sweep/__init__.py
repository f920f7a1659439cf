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

A failed job does not stop the sweep. In a sweep `src.cli.run_job` prints the job's one
`error:` line and raises `JobFailed`; Hydra records the job as FAILED and calls `on_job_end`.
Hydra's basic sweeper would re-raise the first failure once every job of the batch has run,
skipping `on_multirun_end` and printing a traceback, so `on_job_end` records the failure and
marks Hydra's record of the job completed with no return value (only for the basic sweeper;
another sweeper's own failure handling is left alone: Optuna's records the trial as failed and
goes on). After the summary, a sweep with failed jobs ends with one `error:` line naming them,
and exit code:

- the code every failed job would have exited with on its own, when they all share one
  (2 bad input, 3 diverged, 4 an output could not be written; see `src.cli`);
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

The package, one concern a module:

- `naming`: which keys a sweep varies (`plan_of`) and the job folder names (`job_name`,
  `sweep_subdir`, registered as the `${sweep_subdir:}` resolver by `register_resolvers`).
- `summary`: the Hydra callback `SweepSummary` (`hydra.callbacks.sweep_summary` in
  conf/hydra/default.yaml): each job's row, failed and stopped jobs, the outputs, the exit code.
- `rows`: a job's `Row`, the order of the summary table, and the plain text tables.
- `seeds`: the jobs grouped over seeds, their statistics (`seeds.csv`) and `sweep.png`.
- `failure`: `JobFailed`, how `src.cli.run_job` ends a failed job in a sweep.
"""

from __future__ import annotations

from src.sweep.failure import JobFailed
from src.sweep.naming import (
    MAX_NAME,
    _Plan,
    job_name,
    plan_of,
    register_resolvers,
    saved_plan,
    short_names,
    shown,
    sweep_subdir,
    swept_values,
)
from src.sweep.rows import METRICS, Row, sort_metric, sorted_rows, text_table
from src.sweep.seeds import SEED_KEY, Group, plot_seeds, seed_groups, stats
from src.sweep.summary import BASIC_SWEEPER, STATUS_FILE, STOP_CODES, SweepSummary

__all__ = [
    "BASIC_SWEEPER",
    "MAX_NAME",
    "METRICS",
    "SEED_KEY",
    "STATUS_FILE",
    "STOP_CODES",
    "Group",
    "JobFailed",
    "Row",
    "SweepSummary",
    "job_name",
    "plan_of",
    "plot_seeds",
    "register_resolvers",
    "saved_plan",
    "seed_groups",
    "short_names",
    "shown",
    "sort_metric",
    "sorted_rows",
    "stats",
    "sweep_subdir",
    "swept_values",
    "text_table",
]

# The plan of the sweep this process launches: set by SweepSummary.on_multirun_start, read by
# naming.sweep_subdir (the job folder names) and src.runtime.threads.sweep_batch. It is kept
# here, on the package, because `src.sweep._plan` is where threads.py reads it and tests patch it.
_plan: _Plan | None = None
