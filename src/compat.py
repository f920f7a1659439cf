"""The project's only uses of Hydra's, Lightning's and torch's private APIs, one function each.

Each is here because no public API does the same (checked on Hydra 1.3.2, Lightning 2.6 and
torch 2.13); `tests/test_compat.py` fails with the name of the one a new release changed. Code
elsewhere calls these functions and never reaches into a library's private names itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# The class paths Hydra's own launcher and sweeper have in a composed config
# (`hydra.launcher._target_`, `hydra.sweeper._target_`): compared as text, never imported.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def hydra_args_parser() -> argparse.ArgumentParser:
    """The parser `@hydra.main` reads the command line with, so the checks before a run see the
    same overrides and flags (`--multirun`, `--cfg`, `--config-dir`, ...) Hydra will. Hydra has
    no public way to parse its command line without running the app."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def job_error(job_return: Any) -> BaseException | None:
    """The exception a failed Hydra job raised. The public `JobReturn.return_value` re-raises it
    and writes a line of its own to stderr; a sweep summary only needs to read it."""
    return job_return._return_value


def is_script_launcher(launcher: Any) -> bool:
    """Whether `launcher` is Lightning's launcher for `strategy=ddp`, which re-runs the command
    line once per extra process (`_SubprocessScriptLauncher`, holding the processes it started
    in `procs`)."""
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    return isinstance(launcher, _SubprocessScriptLauncher)


def count_optimizer_step(optimizer: Any) -> None:
    """What Lightning's `LightningOptimizer.step` does around the step besides stepping: the
    trainer's iteration count moves on (`global_step`). For a step replayed as a CUDA graph,
    which ran torch's optimizer inside the graph instead of calling the wrapper."""
    optimizer._on_before_step()
    optimizer._on_after_step()


def event_file_writer(writer: Any) -> Any:
    """The event file writer of a TensorBoard `SummaryWriter` (reopened if it was closed): one
    `add_summary` of it writes a whole iteration's values as one event; the public `add_scalar`
    and `add_histogram` write an event a value, about ten times the cost."""
    return writer._get_file_writer()


def task_name(task_function: Any) -> str:
    """The job name `@hydra.main` gives `task_function`'s runs (`hydra.job.name`, the name of its
    log file): `train` for `python -m src.train`, whether run as a module or imported."""
    from hydra._internal.utils import (
        detect_calling_file_or_module_from_task_function,
        detect_task_name,
    )

    return detect_task_name(*detect_calling_file_or_module_from_task_function(task_function))


def config_search_path(task_function: Any, config_dir: str, args: argparse.Namespace) -> Any:
    """The config search path `@hydra.main` composes `task_function`'s command line with:
    `config_dir` (its `config_path`), or `--config-path`'s folder instead, with `--config-dir`'s
    folder ahead of the project's. Hydra builds it inside its own run only."""
    import os

    from hydra._internal.utils import (
        create_automatic_config_search_path,
        create_config_search_path,
        detect_calling_file_or_module_from_task_function,
    )
    from hydra.core.config_search_path import SearchPathQuery

    if args.config_path is None:
        search_path = create_config_search_path(config_dir)  # `@hydra.main`'s, from a path
    else:
        called = detect_calling_file_or_module_from_task_function(task_function)
        search_path = create_automatic_config_search_path(*called, args.config_path)
    if args.config_dir is not None:
        added = f"file://{os.path.abspath(args.config_dir)}"
        search_path.prepend("command-line", added, anchor=SearchPathQuery(provider="schema"))
    return search_path


def start_hydra(job_name: str, search_path: Any) -> None:
    """Hydra set up to compose with `search_path` (what `initialize_config_dir` does with one
    folder): `hydra.compose` then composes as `@hydra.main` will."""
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.version import setbase

    GlobalHydra.instance().clear()
    setbase("1.3")
    Hydra.create_main_hydra2(job_name, search_path)


def run_composed(task_function: Any, search_path: Any, cfg: Any) -> None:
    """`@hydra.main`'s single run of `task_function` (run folder, `.hydra/`, logging, Hydra's
    callbacks and its report of an error) on `cfg`, the command line's config composed already,
    `hydra` node included. `@hydra.main` would compose it twice more (to learn the run mode, then
    to run); Hydra has no public way to run a job on a config composed before."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import run_and_report
    from hydra.core.global_hydra import GlobalHydra

    hydra = Hydra.create_main_hydra2(task_name(task_function), search_path)
    loader = hydra.config_loader

    class Composed:
        """Hydra's loader, but its next composition is `cfg` (a debug dump composes for itself)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(loader, name)

        def load_configuration(self, *args: Any, **kwargs: Any) -> Any:
            hydra.config_loader = loader
            return cfg

    if cfg.hydra.mode is None:  # what `@hydra.main` adds to a plain run's command line
        cfg.hydra.overrides.hydra.append("hydra.mode=RUN")
    from omegaconf import OmegaConf

    # As typed: iterating the node would resolve a `${...}` that an override holds.
    overrides = OmegaConf.to_container(cfg.hydra.overrides, resolve=False)
    overrides = [*overrides["task"], *overrides["hydra"]]
    hydra.config_loader = Composed()
    try:
        name = cfg.hydra.job.config_name
        run_and_report(lambda: hydra.run(name, task_function, overrides))
    finally:
        GlobalHydra.instance().clear()


def event_writer_file(thread: Any) -> str | None:
    """The event file a TensorBoard writer thread (`EventFileWriter`'s `_AsyncWriterThread`,
    which does its writes) writes; None for any other thread."""
    if type(thread).__module__ != "tensorboard.summary.writer.event_file_writer":
        return None
    file = getattr(getattr(thread, "_record_writer", None), "_writer", None)
    name = getattr(file, "filename", None)
    return name.decode() if isinstance(name, bytes) else name


def keep_lost_jobs() -> None:
    """A job that submitit finds ended with no result (killed by SIGKILL, out of memory, past
    its time limit) becomes a failed job, as Hydra's other launchers report one: submitit's
    `Job.results` would raise `UncompletedJobError` in the launcher and end the whole sweep,
    summary and all. Hydra's callbacks see the job end, from its overrides and number as the
    launcher submitted them (`BaseSubmititLauncher.__call__`'s arguments)."""
    import submitit
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import open_dict, read_write

    from src.errors import JobFailed

    results = submitit.Job.results
    if getattr(results, "keeps_lost_jobs", False):
        return

    def kept(job: Any) -> list[Any]:
        try:
            return results(job)
        except submitit.core.utils.UncompletedJobError:
            submission = job.submission()
            launcher, (overrides, _, num, *_) = submission.function, submission.args
            cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
            with read_write(cfg.hydra.runtime), open_dict(cfg):
                cfg.hydra.job.num = num
                HydraConfig.instance().set_config(cfg)
                sweep = cfg.hydra.sweep
                cfg.hydra.runtime.output_dir = str(Path(sweep.dir, sweep.subdir))
            line = f"error: ended with no result (submitit: {job.state}); see {job.paths.stderr}"
            ret = JobReturn(overrides, cfg, cfg.hydra, status=JobStatus.FAILED)
            ret.return_value = JobFailed(line, 1)
            launcher.hydra_context.callbacks.on_job_end(config=cfg, job_return=ret)
            return [ret]

    kept.keeps_lost_jobs = True  # type: ignore[attr-defined]
    submitit.Job.results = kept


def end_searches_without_result() -> None:
    """An Optuna search none of whose trials completed (each failed) ends as any sweep whose jobs
    all failed: Hydra's `on_multirun_end` (the summary and the exit code) follows. The sweeper
    asks its study for the best trial once the trials are done, which raises `ValueError` when
    there is none, before that hook; there is then no `optimization_results.yaml` to write."""
    import logging

    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    sweep = OptunaSweeperImpl.sweep
    if getattr(sweep, "ends_without_result", False):
        return

    def ended(self: Any, arguments: list[str]) -> None:
        try:
            return sweep(self, arguments)
        except ValueError as err:
            if str(err) != "No trials are completed yet.":  # optuna's in-memory storage's words
                raise
            logging.getLogger(__name__).warning("No trial completed: no best parameters.")

    ended.ends_without_result = True  # type: ignore[attr-defined]
    OptunaSweeperImpl.sweep = ended
