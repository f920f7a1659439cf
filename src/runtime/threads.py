"""How many threads each job's torch uses, given the Hydra launcher that runs it.

`num_threads` (conf/config.yaml) set to a number is used as is. Left at null (automatic):

- a single run, or a sweep on Hydra's basic launcher (one job at a time, in this process), keeps
  torch's own default: nothing is set, so results match those of earlier runs;
- `hydra/launcher=joblib`: the machine's cores divided by the jobs that run at once, which is
  `hydra.launcher.n_jobs` (-1 all cores, -2 all but one: joblib's `cores + 1 + n_jobs`), or fewer
  when the sweep (or a batch of its sweeper) has fewer jobs;
- `hydra/launcher=submitit_slurm` (and the `slurm` preset): `hydra.launcher.cpus_per_task`, the
  CPUs SLURM gives each job; when that is null, the cores the job may run on;
- `hydra/launcher=submitit_local`: `cpus_per_task` when set; else the cores divided by the jobs
  that run at once (submitit's local executor starts every job of the batch together, each with
  `tasks_per_node` processes).

Always at least 1. "The machine's cores" are those this process may run on
(`os.sched_getaffinity`), so a CPU set given by taskset, a container or SLURM counts, not the
whole machine. `configure_threads` applies the choice (`torch.set_num_threads`, and
`torch.set_num_interop_threads` where torch still allows it) and logs it in one line. It also
sets OMP_NUM_THREADS: with DDP (a single run), Lightning gives each process cores / processes on
the node when it starts them unless OMP_NUM_THREADS is set, and its processes inherit the
variable; so an explicit `num_threads` holds there too, and null leaves it to Lightning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.compat import BASIC_LAUNCHER

log = logging.getLogger(__name__)

_PLUGINS = "hydra_plugins"
JOBLIB = f"{_PLUGINS}.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = f"{_PLUGINS}.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SUBMITIT_SLURM = f"{_PLUGINS}.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: torch's default, left alone
    reason: str

    def describe(self) -> str:
        count = "torch's default" if self.threads is None else str(self.threads)
        return f"torch threads: {count} ({self.reason})"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def joblib_workers(n_jobs: Any, cores: int) -> int:
    """Joblib's worker count for `n_jobs`: negative counts back from the cores (-1 all of them),
    per joblib's convention; null (and 0, which joblib refuses) as one."""
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        return 1
    return max(cores + 1 + n_jobs, 1) if n_jobs < 0 else n_jobs


def _positive(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return value if ok else None


def choose_threads(
    num_threads: int | None,
    launcher: Mapping[str, Any] | None,
    multirun: bool,
    cores: int,
    batch: int | None = None,
) -> ThreadChoice:
    """The thread count for one job.

    `launcher`: `hydra.launcher` as the job sees it; `cores`: `available_cores()`; `batch`: the
    most jobs the sweep launches together, where known (its number of jobs, or its sweeper's
    batch size), so 2 jobs on 8 cores with `n_jobs=-1` get 4 threads each, not 1.
    """
    if num_threads is not None:
        return ThreadChoice(max(int(num_threads), 1), f"num_threads={num_threads}")
    target = str((launcher or {}).get("_target_", "")) if multirun else ""
    if target == JOBLIB:
        n_jobs = launcher.get("n_jobs")
        workers = joblib_workers(n_jobs, cores)
        at_once = min(workers, batch) if batch else workers
        return _shared(cores, at_once, f"hydra.launcher.n_jobs={n_jobs}")
    if target in (SUBMITIT_SLURM, SUBMITIT_LOCAL):
        cpus = _positive(launcher.get("cpus_per_task"))
        if cpus is not None:
            return ThreadChoice(cpus, f"hydra.launcher.cpus_per_task={cpus}")
        if target == SUBMITIT_SLURM:
            return ThreadChoice(cores, f"{cores} cores given to this job, cpus_per_task=null")
        tasks = _positive(launcher.get("tasks_per_node")) or 1
        each = f", {tasks} tasks each" if tasks > 1 else ""
        note = f"submitit_local starts them together{each}"
        return _shared(cores, (batch or 1) * tasks, note)
    if not multirun:
        return ThreadChoice(None, "num_threads=null, a single run")
    if target in (BASIC_LAUNCHER, ""):
        return ThreadChoice(None, "num_threads=null, one job at a time")
    unknown = target.rsplit(".", 1)[-1]
    return ThreadChoice(None, f"num_threads=null; {unknown} is not known here: set num_threads")


def _shared(cores: int, processes: int, note: str) -> ThreadChoice:
    processes = max(processes, 1)
    threads = max(cores // processes, 1)
    return ThreadChoice(threads, f"{cores} cores / {processes} at once: {note}")


def sweep_batch(hydra_cfg: DictConfig) -> int | None:
    """The most jobs this sweep runs together, where known: its number of jobs, capped by the
    sweeper's batch size (the basic sweeper's `max_batch_size`, Optuna's `n_jobs`)."""
    from src.sweep import naming

    plan = naming.current  # in a job's own process too: it came with the pickled callback
    sweeper = hydra_cfg.get("sweeper") or {}
    sizes = [plan.jobs if plan else None, sweeper.get("max_batch_size"), sweeper.get("n_jobs")]
    known = [s for s in map(_positive, sizes) if s is not None]
    return min(known) if known else None


def configure_threads(cfg: DictConfig) -> ThreadChoice:
    """Choose this job's thread count (see the module docstring), apply it and log it."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    launcher, multirun, batch = None, False, None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        launcher = hydra_cfg.get("launcher")  # a DictConfig: .get() resolves interpolations
        if multirun and cfg.get("num_threads") is None:
            batch = sweep_batch(hydra_cfg)
    choice = choose_threads(cfg.get("num_threads"), launcher, multirun, available_cores(), batch)
    strategy = str(OmegaConf.select(cfg, "trainer.strategy", default="") or "").lower()
    omp = os.environ.get("OMP_NUM_THREADS")
    if choice.threads is None and omp:  # torch's default follows it (torchrun sets 1)
        choice = ThreadChoice(None, f"{choice.reason}; OMP_NUM_THREADS={omp}")
    elif choice.threads is None and strategy == "ddp":
        choice = ThreadChoice(None, f"{choice.reason}; Lightning's DDP sets cores / processes")
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
        # Processes started later inherit it: Lightning's DDP keeps a set OMP_NUM_THREADS.
        os.environ["OMP_NUM_THREADS"] = str(choice.threads)
        try:
            torch.set_num_interop_threads(choice.threads)
        except RuntimeError:  # only before the first parallel work (a reused worker: too late)
            pass
    log.info(
        "%s; intra-op %d, inter-op %d",
        choice.describe(),
        torch.get_num_threads(),
        torch.get_num_interop_threads(),
    )
    return choice
