"""The command line composed as Hydra will compose it (every sweep value too) and checked before
Hydra makes a run folder, so a mistake costs one line and no folder; a single run's composition
is the one Hydra then runs."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import yaml  # OmegaConf's parser
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.compat import config_search_path, hydra_args_parser, start_hydra
from src.config.folders import (
    check_checkpoint_folder,
    check_logger_folders,
    check_output_folder,
    check_run_folder_free,
)
from src.config.hydra_errors import worded
from src.config.rules import check_config
from src.config.schema import leaves
from src.errors import ConfigError, one_line


def parse_overrides(lines: Iterable[str]) -> list[Any]:
    """Override lines read by Hydra's own grammar, as `@hydra.main` reads the command line's
    (`hydra.overrides.task` as typed: a `${...}` in one is not resolved here)."""
    typed = OmegaConf.to_container(lines, resolve=False) if OmegaConf.is_list(lines) else lines
    hydra = GlobalHydra.instance()  # a glob over a group's options (optimizer=glob(sgd*)) lists
    loader = hydra.config_loader() if hydra.is_initialized() else None  # the config folder
    return OverridesParser.create(loader).parse_overrides(list(typed))


def quoted_for_hydra(argv: list[str]) -> list[str]:
    """The command line with each override whose value holds characters outside ASCII quoted,
    as Hydra's grammar needs (`hydra.run.dir=runs/run dir ü` as `hydra.run.dir='runs/run dir ü'`)
    where the quotes keep the very string typed. Raises ConfigError saying how to quote the rest
    (a list or a sweep of such strings)."""

    parser, error = OverridesParser.create(), object()

    def value(line: str) -> Any:
        """The override's value, or `error` where Hydra cannot parse it."""
        try:
            return parser.parse_override(line).value()
        except HydraException:
            return error

    def quoted(line: str) -> str:
        key, _, raw = line.partition("=")
        text = raw.strip()  # what an unquoted value means: its edges' blanks are not part of it
        if text.isascii() or value(line) is not error:
            return line
        plain = "".join(c if c.isascii() else "x" for c in text)
        as_plain = value(f"{key}={plain}")
        if as_plain is error:
            return line  # another mistake as well: Hydra's message names it
        escaped = re.sub(r"\\+$", lambda m: m.group() * 2, text)  # no \' at the closing quote
        if as_plain == plain and value(f"{key}='{escaped}'") == text:
            return f"{key}='{escaped}'"
        chars = "".join(dict.fromkeys(c for c in text if not c.isascii()))
        raise ConfigError(
            f"{line}: Hydra reads {chars} only inside quotes: quote each string that holds it "
            f"({key}='...', or each item of a list or sweep)"
        )

    given = set(hydra_args_parser().parse_args(argv).overrides)
    return [quoted(arg) if arg in given else arg for arg in argv]


def _compositions(overrides: list[str], source: str = "") -> list[list[str]]:
    """The override lists to try: every value of every sweep appears in at least one of them.
    A line Hydra cannot read is a ConfigError: Hydra's one line, after `source` (where from)."""

    try:
        parsed = parse_overrides(overrides)
        values = [_sweep_values(o) if o.is_sweep_override() else None for o in parsed]
    except HydraException as err:
        for typed in overrides:  # the line at fault, if one alone is: with how to quote it
            key, _, value = typed.partition("=")
            with contextlib.suppress(HydraException):
                parse_overrides([typed])
                continue
            if value and not value.startswith(("'", '"')):
                raise ConfigError(
                    f"{source}{typed}: Hydra cannot read this value ({one_line(err)}); one "
                    f"holding '=', spaces or brackets is quoted: \"{key}='{value}'\""
                ) from err
        raise ConfigError(f"{source}{one_line(err)}") from err

    if empty := [o.input_line for o, v in zip(parsed, values) if v == []]:
        raise ConfigError(f"{source}{empty[0]}: this sweep has no value to run")  # glob(zzz*)

    def line(o: Any, value: str) -> str:
        return f"{o.get_key_element()}={value}"  # the key element keeps its +, ++ or ~

    base = [line(o, v[0]) if v else o.input_line for o, v in zip(parsed, values)]
    runs = [base]
    for i, (o, vs) in enumerate(zip(parsed, values)):
        for v in (vs or [])[1:]:
            runs.append([*base[:i], line(o, v), *base[i + 1 :]])
    return runs


def _sweep_values(o: Any) -> list[str]:
    """A sweep's values: every one of a list or range; an interval's two ends, the upper one just
    below it for floats (Optuna samples a float interval in [start, end), an int one in both)."""

    value = o.value()
    if not isinstance(value, IntervalSweep):
        return list(o.sweep_string_iterator())
    start, end = value.start, value.end
    if isinstance(start, int) and isinstance(end, int):
        return [str(start), str(end)]
    return [repr(float(start)), repr(math.nextafter(float(end), float(start)))]


def sweeper_params(cfg: DictConfig, overrides: Iterable[str]) -> list[str]:
    """A multirun's `hydra.sweeper.params` (hparams_search=optuna's search space) as override
    lines, but for the keys the command line sets itself (they replace the config's)."""

    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    given = {o.key_or_group for o in parse_overrides(overrides)}
    return [f"{key}={value}" for key, value in params.items() if key not in given]


def _check_sweep_mode(cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    """Sweep values need a multirun, and joblib's launcher some jobs at once; an Optuna search
    needs a validation metric, the direction in which it improves, and a storage it can open."""

    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    optuna = "optuna" in sweeper.lower()
    for o in parse_overrides(overrides):
        key = o.key_or_group
        if o.is_sweep_override() and not multirun:
            raise ConfigError(
                f"{o.input_line} is a sweep: add --multirun (or give {key} one value; "
                f"one that holds a comma is quoted: \"{key}='a,b'\")"
            )
        if o.is_sweep_override() and key.startswith("sweep."):  # how a sweep continues
            raise ConfigError(
                f"{o.input_line}: {key} says how the sweep continues (not a setting "
                "of its jobs): give it one value"
            )
        if isinstance(o.value(), IntervalSweep) and not optuna:  # Hydra's answer: a traceback
            raise ConfigError(
                f"{o.input_line}: Hydra's basic sweeper runs lists and ranges, not an interval: "
                "give values (0.01,0.05) or range(...), or search it with hparams_search=optuna"
            )
        if isinstance(o.value(), Glob) and optuna:  # the Optuna sweeper's: an AssertionError
            raise ConfigError(
                f"{o.input_line}: the Optuna sweeper takes no glob: name the options, "
                f"{key}=choice({','.join(_sweep_values(o))})"
            )
    if not multirun:
        return
    if OmegaConf.select(cfg, "hydra.launcher.n_jobs", default=None) == 0:  # joblib's
        raise ConfigError(
            "hydra.launcher.n_jobs=0 runs no job: set how many run at once (2; -1: one a core)"
        )
    if not optuna:
        return
    trials = OmegaConf.select(cfg, "hydra.sweeper.n_trials", default=None)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={trials} must be a whole number, at least 1")
    from src.model.module import VALIDATION_METRICS

    # What a job returns a sweeper, but the test set's: the validation metrics, and the loss of
    # the last iteration (train/loss), each with the way it improves.
    returned = {**VALIDATION_METRICS, "train/loss": "min"}
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if metric not in returned:
        got = f"optimized_metric={metric}" if metric else "optimized_metric is not set"
        raise ConfigError(
            f"{got}: an Optuna search needs a validation or training metric the run returns "
            f"({', '.join(returned)}), not the test set's; use hparams_search=optuna (val/acc on "
            "a 10% split), or optimized_metric=val/acc with data.val_fraction=0.1 (a metric of "
            "your own: list it in VALIDATION_METRICS, src/model/module.py)"
        )
    if metric in VALIDATION_METRICS and not OmegaConf.select(cfg, "data.val_fraction", default=0):
        raise ConfigError(
            f"optimized_metric={metric} needs a validation split, but data.val_fraction=0: set "
            "it above 0 (e.g. data.val_fraction=0.1)"
        )
    _check_optuna_storage(cfg)
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction", default=None)
    better = returned[metric]
    if isinstance(direction, str) and direction != f"{better}imize":  # a list: several metrics
        higher = "higher" if better == "max" else "lower"
        raise ConfigError(
            f"hydra.sweeper.direction={direction} with optimized_metric={metric}, which is "
            f"better {higher}: set hydra.sweeper.direction={better}imize"
        )


def _check_optuna_storage(cfg: DictConfig) -> None:
    """hparams_search=optuna: hydra-optuna-sweeper 1.3 needs optuna<3, whose database storage
    (RDBStorage) fails with SQLAlchemy 2 (an AssertionError on opening); in memory works."""
    storage = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
    if not storage or str(storage).startswith("redis"):
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        optuna, sqlalchemy = version("optuna"), version("sqlalchemy")
    except PackageNotFoundError:
        return
    if int(optuna.split(".")[0]) < 3 and int(sqlalchemy.split(".")[0]) >= 2:
        raise ConfigError(
            f"hydra.sweeper.storage={storage}: optuna {optuna} (hydra-optuna-sweeper needs "
            f"optuna<3) cannot keep a study in a database with SQLAlchemy {sqlalchemy}; use "
            "hydra.sweeper.storage=null (in memory)"
        )


def _check_flags(args: Any) -> None:
    """Hydra's own rules for its flags (its ValueError was a traceback, exit 1), in one line."""
    if args.help:  # Hydra prints the help whatever else is given
        return
    if args.resolve and args.cfg is None:
        raise ConfigError("--resolve goes with --cfg or --help: it resolves the config they print")
    if args.resolve and args.cfg == "hydra":  # Hydra's traceback: it drops the job's keys first
        raise ConfigError(
            "--cfg hydra --resolve: Hydra resolves its part without the job's keys, which "
            "hydra.run.dir reads (${task_name}): use --cfg all --resolve"
        )
    modes = {
        "--run": args.run,
        "--multirun": args.multirun,
        "--cfg": args.cfg is not None,
        "--info": args.info is not None,
        "--shell-completion": args.shell_completion,
    }
    given = [flag for flag, on in modes.items() if on]
    if len(given) > 1 and not args.hydra_help:
        hint = " (--cfg job prints a single run's config)" if "--cfg" in given else ""
        raise ConfigError(
            f"{' and '.join(given)}: Hydra takes one of --run, --multirun, --cfg, --info and "
            f"--shell-completion{hint}"
        )


def preflight(
    argv: list[str],
    config_dir: str,
    config_name: str,
    check: Callable[[DictConfig], Any] = check_config,
    job_name: str = "app",
    task_function: Any = None,
) -> tuple[str | None, list[DictConfig], Any]:
    """Compose the config the CLI will run (each sweep value too) and check it with `check`
    (default: check_config), then check that its run (or sweep) folder can be created.
    Returns "run" (a single run: the one config is the run's, `hydra` node and `job_name`
    included, for Hydra to run as it is), "multirun", or None (Hydra's own: it prints), the
    configs composed (none for an informational call), and the config search path (with
    `--config-dir` or `--config-path`, as `@hydra.main` of `task_function` builds it).

    Raises ConfigError with one line for an unknown group, option or key, or a bad value, or a
    run folder that cannot be created, so the user sees that line instead of Hydra's multi-line
    report, and no run directory is made.
    """

    args = hydra_args_parser().parse_args(argv)
    _check_flags(args)
    informational = args.help or args.hydra_help or args.info or args.shell_completion
    if informational:
        return None, [], None  # leave it to Hydra
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        raise ConfigError(f"--config-dir {args.config_dir}: no such folder")
    search_path = config_search_path(task_function, config_dir, args)
    start_hydra(job_name, search_path)
    try:
        runs = _compositions(args.overrides)
        done: dict[tuple[str, ...], DictConfig] = {}

        def composed(overrides: list[str]) -> DictConfig:
            """Each composition once (a plain run needs one; each costs a few 0.1 s)."""
            key = tuple(overrides)
            if key not in done:
                try:
                    done[key] = compose(args.config_name or config_name, overrides, True)
                # ValueError: callbacks=null, a file not UTF-8; YAMLError: one's own file's syntax
                except (HydraException, ValueError, yaml.YAMLError) as err:
                    raise ConfigError(worded(err, overrides, composed, args.overrides)) from err
            return done[key]

        mode = OmegaConf.select(composed(runs[0]), "hydra.mode")  # hparams_search sets it
        multirun = args.multirun or str(mode).endswith("MULTIRUN")
        # The config's own search space (hparams_search=optuna) is swept too: each value of it.
        searched = sweeper_params(composed(runs[0]), args.overrides) if multirun else []
        if searched:
            runs = _compositions([*searched, *args.overrides], "hydra.sweeper.params: ")
        first = composed(runs[0])
        _check_sweep_mode(first, args.overrides, multirun)
        for overrides in runs:
            cfg = composed(overrides)
            if multirun:  # as in each job, whose checks (DDP refused) it then passes already
                cfg.hydra.mode = RunMode.MULTIRUN
            typed = OmegaConf.to_container(cfg, resolve=False)
            unset = [k for k, v in leaves(typed) if v == "???" and not k.startswith("hydra.")]
            if args.cfg and unset:  # printed with `???` for what is still to give, as Hydra does
                continue
            check(cfg)
            if not args.cfg:  # --cfg only prints the config: Hydra makes no folder then
                check_output_folder(cfg, multirun)
                if not multirun:  # a sweep's jobs continue their folders (src.sweep.resume)
                    check_run_folder_free(cfg)
                check_checkpoint_folder(cfg)
                check_logger_folders(cfg)
        # --cfg prints; --resolve without it and a rerun are Hydra's own
        own = args.cfg or args.resolve or args.experimental_rerun
        return (
            (None if own else "multirun" if multirun else "run"),
            list(done.values()),
            search_path,
        )
    finally:
        GlobalHydra.instance().clear()
