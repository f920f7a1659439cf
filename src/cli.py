"""What every entry point (`src.train`, `evaluate`, `predict`, `export`) shares: the process's
set-up (`setup`), the command line checked before Hydra makes a run folder (`run`), and each known
failure ended with one line and a documented exit code (`run_job`): the exit codes and the types
they answer are listed in `src.errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.compat import run_composed, task_name
from src.config import CONFIG_DIR, rules
from src.config.compose import preflight, quoted_for_hydra
from src.console import hydra_quoted, log_to_files, route_output
from src.errors import (
    SIGNAL_NAMES,
    CheckpointError,
    ConfigError,
    DataError,
    JobFailed,
    RunStopped,
    TrainingDiverged,
    exit_with,
    first_line,
    ignore_signals,
    keep_checkpoint,
    one_line,
    stop_on_signals,
    swallowed_stop,
)
from src.model.precision import fast_precision
from src.runtime.loggers import prepare_mlflow_stores, setup_loggers
from src.sweep import summary
from src.sweep.naming import register_resolvers

_STARTED = time.time()  # this process's start, near enough: its imports come first

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 4
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

log = logging.getLogger(__name__)

# Whether `run` set this process up (output, signals) for the job it starts; a launcher that runs
# the job in a process of its own finds it false there. "checked": `run` checked the job's config.
_in_command = {"run": False, "checked": False}


def _drop_adverts(record: logging.LogRecord) -> bool:
    """Lightning advertises a cloud logger at every start; with no network it is only noise."""
    return "litlogger" not in record.getMessage()


def setup() -> None:
    """Everything a process sets once before composing a config: OmegaConf's resolvers, MLflow's
    environment, the warnings and log lines that are noise here. Safe to call again; nothing
    is set up by importing a module."""
    register_resolvers()  # ${sweep_subdir:}
    # ${fast_precision:} (experiment=fast)
    OmegaConf.register_new_resolver("fast_precision", fast_precision, replace=True)
    setup_loggers()  # ${run_name:}, ${tag_dict:}, MLflow offline and quiet
    # Added once: logging keeps no duplicate of the same filter.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_adverts)
    # Optuna's storage imports alembic, which logs each of its plugins at INFO: seven lines.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # In-memory batches need no worker processes; Lightning's advice to add some does not apply.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # Lightning 2.6 on torch 2.13 trips over a torch deprecation in its own pytree helper.
    warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
    # Without a validation split val_dataloader returns an empty list, and Lightning remarks
    # once that its length is zero: intended (no validation loop), so not a warning.
    warnings.filterwarnings("ignore", "Total length of `list` across ranks is zero")
    # joblib's workers, ended by a stop, leave semaphores that multiprocessing's resource
    # tracker (a process of its own, which reads this variable) frees, then reports after the
    # stop line: not a warning here.
    filters, ours = os.environ.get("PYTHONWARNINGS", ""), "ignore:resource_tracker:UserWarning"
    if ours not in filters:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [filters, ours]))


def failure(err: BaseException) -> tuple[str, int] | None:
    """The one line and exit code for a failure the user can act on; None for a bug."""
    if not isinstance(err, RunStopped) and (stop := swallowed_stop()):
        err = stop  # what the code a signal interrupted made of its stop
    if isinstance(err, (ConfigError, DataError, CheckpointError)):
        return f"error: {err}", EXIT_BAD_INPUT
    if isinstance(err, InstantiationException):  # e.g. a key the class does not take
        key = re.search(r"full_key: (\S+)", str(err))
        if key and err.__cause__ is not None and str(err.__cause__).strip():  # the class's own
            return f"error: {key[1]}: {first_line(err.__cause__)}", EXIT_BAD_INPUT
        return f"error: {one_line(err)}", EXIT_BAD_INPUT
    if isinstance(err, TrainingDiverged):
        return f"error: {err}", EXIT_DIVERGED
    if isinstance(err, RunStopped):
        code = EXIT_SIGNAL.get(err.signum, 128 + err.signum)
        if err.path is None:  # none of the project's; one Lightning wrote (callbacks=none)?
            found = _lightnings_checkpoint()
            if found is None:
                return f"stopped: {err}", code
            return (
                f"stopped: {err}; the last checkpoint Lightning saved: {found}. "
                f"Resume with: {resume_command(found)}",
                code,
            )
        if err.finished and not rules.in_multirun():  # a sweep's job: the sweep completes it
            evaluate = shlex.join(
                ["python", "-m", "src.evaluate", f"ckpt_path={hydra_quoted(err.path)}"]
            )
            return f"stopped: {err}. Test it with: {evaluate}", code
        return f"stopped: {err}. Resume with: {resume_command(err.path)}", code
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename and str(err.filename) not in str(err) else ""
        reason = err.strerror if where and err.strerror else str(err)
        return f"error: {where}{reason}", EXIT_WRITE_FAILED
    return None


def _lightnings_checkpoint() -> Any:
    """The newest checkpoint this process wrote in its run's folder other than the project's
    `last.ckpt` (Lightning's own ModelCheckpoint, where the project's is switched off:
    callbacks=none), or None."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    found = [p for p in Path(HydraConfig.get().runtime.output_dir).rglob("*.ckpt")
             if p.name != "last.ckpt" and p.stat().st_mtime >= _STARTED]  # fmt: skip
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def resume_command(path: Any) -> str:
    """What resumes a stopped run: its checkpoint and the run's own overrides (quoted for Hydra
    where a path holds what its grammar reads, such as `=`, and for the shell); for a sweep's
    job, the sweep's own command."""
    from hydra.core.hydra_config import HydraConfig

    if rules.in_multirun():
        return "the sweep's own command again (it skips finished jobs and resumes this one)"
    flags: list[str] = []
    overrides: list[str] = []
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        typed = OmegaConf.to_container(hydra.overrides, resolve=False)
        overrides = [o for o in typed["task"] if o.split("=")[0].lstrip("+~") != "ckpt_path"]
        # and what it was composed from: another config folder or primary config, a search path
        own = ("hydra.run.dir", "hydra.mode")  # a new folder; Hydra's own
        overrides += [o for o in typed["hydra"] if o.split("=")[0] not in own]
        for source in hydra.runtime.config_sources:
            where = str(source.path)
            if source.provider == "command-line":
                flags += ["--config-dir", where]
            elif (
                source.provider == "main" and f"{source.schema}://{where}" != f"file://{CONFIG_DIR}"
            ):
                flags += ["--config-path", where if source.schema == "file" else f"pkg://{where}"]
        if hydra.job.config_name != "config":
            flags += ["--config-name", str(hydra.job.config_name)]
    command = ["python", "-m", "src.train", *flags, f"ckpt_path={hydra_quoted(path)}", *overrides]
    return shlex.join(command)


def config_checked() -> bool:
    """Whether `run` checked the config of the job now running (a single run it started): the
    job need not check it again. A sweep's job, or one Hydra composed itself, checks its own."""
    return _in_command["checked"]


def _complete() -> None:
    keep_checkpoint(None)  # the job has ended: a later stop is its sweep's (or nothing)
    if _in_command["run"] and not rules.in_multirun():  # `run` gives the handlers back
        ignore_signals()  # the run is complete: a signal has nothing left to stop


def finished(log: logging.Logger, output_dir: Any) -> None:
    """A command's last line, once its outputs are written: a signal from then on is ignored
    (a single run exits 0; a sweep's comes before its next job)."""
    _complete()
    log.info("Outputs in %s", output_dir)


def run_job(job: Callable[[], Any]) -> Any:
    """Run one job inside Hydra's main; a known failure ends it with its line and exit code.

    In a multirun the job ends instead by raising `src.errors.JobFailed` (the line and the code)
    after printing its line, or an unexpected error's traceback: the sweep goes on with the next
    job, and `src.sweep.SweepSummary` reports the failure and sets the sweep's exit code.
    """
    if not _in_command["run"]:  # a launcher's own process: what `run` did in the first one
        setup()
        stop_on_signals()
    keep_checkpoint(None)  # a sweep's next job has kept no checkpoint yet
    route_output()  # Lightning's lines and warnings into the run's log file
    from tqdm.contrib.logging import logging_redirect_tqdm  # tqdm: Lightning's, loaded by now

    try:
        with logging_redirect_tqdm() if logging.getLogger().handlers else contextlib.nullcontext():
            result = job()  # a log line lifts a live progress bar off its line, then redraws it
        _complete()  # a job whose last line was not `finished`'s
        return result
    except (Exception, RunStopped) as err:
        import traceback

        multirun = rules.in_multirun()
        known = failure(err)
        if known is None:
            trace = "".join(traceback.format_exception(err)).rstrip()
            log_to_files(log, logging.ERROR, "%s", trace)  # the log file keeps what is printed
            if not multirun:
                raise
            # A bug: its traceback now, as a single run would print it, and the sweep goes on.
            print(trace, file=sys.stderr, flush=True)
            reason = str(err).strip().splitlines()[:1]
            line, code = f"error: {': '.join([type(err).__name__, *reason])}", 1
        else:
            line, code = known
            log_to_files(log, logging.ERROR, "%s", line)  # the terminal gets it on stderr
            if rank_zero_only.rank == 0:  # under DDP every process fails alike: say it once
                print(line, file=sys.stderr, flush=True)
            if not multirun:
                sys.exit(code)
        raise JobFailed(line, code) from err


def run(
    main: Callable[[], Any],
    config_dir: str,
    config_name: str,
    check: Callable[[DictConfig], Any] | None = None,
) -> None:
    """Check the command line's config first (`check`, by default `check_config`, on every
    composition, sweeps included), so mistakes cost one line and no run folder. A single run's
    config, composed and checked once here, is the one Hydra runs; a sweep's jobs are composed
    by Hydra's launcher."""
    previous = stop_on_signals()  # first: Ctrl-C at any moment stops the run
    _in_command["run"] = True
    try:
        setup()
        rules.checked = set()  # the job does not redo the checks passed here
        try:
            sys.argv[1:] = quoted_for_hydra(sys.argv[1:])  # Hydra's main reads sys.argv
            check = check or rules.check_config
            argv, name = sys.argv[1:], task_name(main)
            mode, configs, search_path = preflight(argv, config_dir, config_name, check, name, main)
            if mode == "multirun":  # parallel jobs would each create it, at once: here, first
                prepare_mlflow_stores(configs)
        except (ConfigError, DataError, CheckpointError) as err:
            exit_with(f"error: {err}", EXIT_BAD_INPUT)
        if mode == "run":
            _in_command["checked"] = True
            run_composed(main, search_path, configs[0])
        else:
            main()
        if stop := swallowed_stop():  # its RunStopped was dropped on the way: stop now
            raise stop
    except RunStopped as err:  # before the job began, or in Hydra's own code around it
        line, code = failure(err)
        summary.stop_launch(SIGNAL_NAMES.get(err.signum, str(err.signum)), code)  # a sweep's
        exit_with(line, code)
    finally:  # run in-process (tests, a notebook): the caller's handlers again
        _in_command["run"] = _in_command["checked"] = False
        rules.checked = summary.launching = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if getattr(main_spec, "name", "").startswith("src."):  # python -m src.<command>
            ignore_signals()  # its exit code is decided; Python's shutdown (which can take a
            # second) would die by the signal's default action instead
