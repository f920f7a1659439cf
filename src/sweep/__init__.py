"""Sweeps people can read: `python -m src.train --multirun a=1,2 seed=0,1` ends with a summary
(docs/sweeps-and-clusters.md), and each job's folder is named by its swept values.

One concern a module:

- `naming`: which keys a sweep varies (`plan_of`) and the job folder names (`job_name`,
  `sweep_subdir`, registered as the `${sweep_subdir:}` resolver by `register_resolvers`).
- `summary`: the Hydra callback `SweepSummary` (`hydra.callbacks.sweep_summary` in
  conf/hydra/default.yaml): each job's row, failed and stopped jobs, the outputs, the exit code.
- `rows`: a job's `Row`, the order of the summary table, and the plain text tables.
- `seeds`: the jobs grouped over seeds, their statistics (`seeds.csv`) and `sweep.png`.
- `resume`: the same sweep run again into its folder continues it (`sweep.json`, each job's
  folder); any other sweep there is refused.
"""

from __future__ import annotations

from src.sweep.summary import SweepSummary

__all__ = ["SweepSummary"]
