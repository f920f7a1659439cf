"""How many threads each job's torch uses: `num_threads` (conf/config.yaml), else what the job's
launcher already gives it, and the one log line that says which.

`num_threads` set to a number is used as is. Left at null (automatic):

- a single run, or a sweep on Hydra's basic launcher (one job at a time): torch's default, which
  follows the cores this process may run on and OMP_NUM_THREADS; nothing is set, so results
  match those of earlier runs;
- `hydra/launcher=joblib`: joblib's loky workers start with OpenMP capped at the cores divided by
  the workers (`hydra.launcher.n_jobs`, joblib's convention for -1, -2), and torch reads that
  cap. Only when fewer jobs run at once (a smaller sweep, or the batches of a sweeper: Optuna's
  `n_jobs`) does each get the cores divided by those instead;
- submitit: `hydra.launcher.cpus_per_task` where set; else on SLURM the cores given to the job,
  and with `submitit_local`, which starts every job of a batch together on this machine, the
  cores divided by the jobs (times their `tasks_per_node`).

"The cores" are joblib's count: those this process may run on (taskset, a container's or
SLURM's CPU set and quota), not the whole machine. Always at least 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.compat import BASIC_LAUNCHER
from src.config.devices import device_count
from src.config.rules import in_multirun

log = logging.getLogger(__name__)

_PLUGINS = "hydra_plugins"
JOBLIB = f"{_PLUGINS}.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = f"{_PLUGINS}.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SUBMITIT_SLURM = f"{_PLUGINS}.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a job sets (None: it leaves torch's own), and why."""

    threads: int | None
    reason: str


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

    `launcher`: `hydra.launcher` as the job sees it; `cores`: `joblib.cpu_count()`; `batch`: the
    most jobs the sweep launches together, where known (its number of jobs, or its sweeper's
    batch size), so 2 jobs with `n_jobs=-1` on 8 cores get 4 threads each, not 1.
    """
    if num_threads is not None:
        return ThreadChoice(max(int(num_threads), 1), f"num_threads={num_threads}")
    target = str((launcher or {}).get("_target_", "")) if multirun else ""
    if target == JOBLIB:
        import joblib

        n_jobs = launcher.get("n_jobs")
        workers = joblib.effective_n_jobs(n_jobs)
        note = f"hydra.launcher.n_jobs={n_jobs}"
        if batch and batch < workers:  # joblib's cap counts workers that would sit idle
            return _shared(cores, batch, note)
        return ThreadChoice(None, f"{cores} cores / {workers} at once: {note}")
    if target in (SUBMITIT_SLURM, SUBMITIT_LOCAL):
        cpus = _positive(launcher.get("cpus_per_task"))
        if cpus is not None:
            return ThreadChoice(cpus, f"hydra.launcher.cpus_per_task={cpus}")
        if target == SUBMITIT_SLURM:
            return ThreadChoice(cores, f"{cores} cores given to this job, cpus_per_task=null")
        tasks = _positive(launcher.get("tasks_per_node")) or 1
        each = f", {tasks} tasks each" if tasks > 1 else ""
        return _shared(cores, (batch or 1) * tasks, f"submitit_local starts them together{each}")
    if not multirun:
        return ThreadChoice(None, "num_threads=null, a single run: torch's default")
    if target in (BASIC_LAUNCHER, ""):
        return ThreadChoice(None, "num_threads=null, one job at a time: torch's default")
    unknown = target.rsplit(".", 1)[-1]
    return ThreadChoice(None, f"num_threads=null; {unknown} is not known here: set num_threads")


def _shared(cores: int, processes: int, note: str) -> ThreadChoice:
    threads = max(cores // processes, 1)
    return ThreadChoice(threads, f"{cores} cores / {processes} at once: {note}")


def sweep_batch(hydra_cfg: DictConfig) -> int | None:
    """The most jobs this sweep runs together, where known: its number of jobs, capped by the
    sweeper's batch size (the basic sweeper's `max_batch_size`, Optuna's `n_jobs`)."""
    from src.sweep import naming

    sweeper = hydra_cfg.get("sweeper") or {}
    plan = naming.current  # in a job's own process too: it came with the pickled callback
    sizes = [plan.jobs if plan else None, sweeper.get("max_batch_size"), sweeper.get("n_jobs")]
    return min(filter(None, map(_positive, sizes)), default=None)  # _positive: None or > 0


# What a job of this process set (threads, OMP_NUM_THREADS) and what they were before: a later
# job left automatic (a sweep's next job on Hydra's basic launcher, in the same process) gets
# back whatever nobody changed since, instead of the earlier job's count.
_set: tuple[int, str] | None = None
_before: tuple[int, str | None] = (0, None)


def _undo_earlier_job() -> None:
    import torch

    global _set
    if _set is None:
        return
    threads, omp = _before
    if torch.get_num_threads() == _set[0]:
        torch.set_num_threads(threads)
    if os.environ.get("OMP_NUM_THREADS") == _set[1] and omp is None:
        del os.environ["OMP_NUM_THREADS"]
    elif os.environ.get("OMP_NUM_THREADS") == _set[1]:
        os.environ["OMP_NUM_THREADS"] = omp
    _set = None


def configure_threads(cfg: DictConfig) -> ThreadChoice:
    """Choose this job's thread count (see the module docstring), apply it and log it."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    global _set, _before
    _undo_earlier_job()
    launcher, multirun, batch, cores = None, in_multirun(), None, 1
    if multirun:  # a DictConfig: .get() resolves interpolations
        launcher = HydraConfig.get().get("launcher")
    if multirun and cfg.get("num_threads") is None:
        import joblib

        batch, cores = sweep_batch(HydraConfig.get()), joblib.cpu_count()
    choice = choose_threads(cfg.get("num_threads"), launcher, multirun, cores, batch)
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto").lower()
    local = device_count(cfg, accelerator)  # processes on this machine: several under DDP
    if choice.threads is None and local > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Lightning's DDP would set the cores / processes after this line: set and said here
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        choice = _shared(usable, local, "DDP processes, as Lightning shares the cores")
    if choice.threads is not None:
        _before = (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
        _set = (choice.threads, str(choice.threads))
        torch.set_num_threads(choice.threads)
        # Lightning's DDP gives the processes it starts cores / processes unless this is set.
        os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    intra, inter = torch.get_num_threads(), torch.get_num_interop_threads()
    log.info("torch threads: %d (%s); intra-op %d, inter-op %d", intra, choice.reason, intra, inter)
    return choice
