"""Config entries that name a class (`_target_`): each importable, taking every key it is given,
and each key of the type the class declares for it (`schema.require_type`); and no top-level key
added that nothing reads (`check_added_keys`)."""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.config import CONFIG_DIR
from src.config.schema import ABSENT, leaves, written
from src.errors import ConfigError, first_line

# Groups train.py instantiates; the optimizer may go (model.optimizer=null: SGD defaults).
REQUIRED_TARGETS = ("data", "model", "trainer")


# Groups of named entries that train.py builds one by one: an entry without `_target_` would be
# skipped without a word (`+callbacks.early_stopping.monitor=val/acc` without its group).
NAMED_ENTRY_GROUPS = ("callbacks", "logger")


def check_group_entries(settings: dict) -> None:
    """Every entry of callbacks and logger names what to build (null or empty: switched off)."""
    for group in NAMED_ENTRY_GROUPS:
        entries = settings.get(group)
        if not isinstance(entries, dict):
            continue
        for name, node in entries.items():
            if node is None or node == {} or (isinstance(node, dict) and "_target_" in node):
                continue
            held = ", ".join(f"{k}={v}" for k, v in leaves(node)) if node != "" else "nothing"
            options = Path(CONFIG_DIR) / group / str(name)
            if options.is_dir():
                names = sorted(p.stem for p in options.glob("*.yaml"))
                fix = f"add it with +{group}/{name}={names[0] if names else 'NAME'}"
            else:
                fix = f"set {group}.{name}._target_=CLASS or remove it with ~{group}.{name}"
            raise ConfigError(
                f"{group}.{name} has no _target_, so nothing would be built from it (it holds "
                f"{held}): {fix}"
            )


def check_targets(cfg: DictConfig, settings: dict) -> list[tuple[str, Any]]:
    """Each group train.py builds names a class, and no node holds a key its class does not take.
    Returns each given key with the type its class declares for it, for `require_type` (after
    the checks that word a key's refusal more closely)."""
    for group in (*REQUIRED_TARGETS, "optimizer"):
        node = settings.get(group, ABSENT)
        if node is ABSENT and group == "optimizer":
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"{group} must be set: choose one with +{group}=NAME (see conf/{group})"
            )
        if "_target_" not in node:
            raise ConfigError(
                f"{group}._target_ must be set: the {group} config names no class to build"
            )
    typed = []
    for key, _ in leaves(settings):  # every node with a `_target_`, nested ones included
        path, _, last = key.rpartition(".")
        if last == "_target_" and path:
            typed += _check_arguments(cfg, path, OmegaConf.select(cfg, path))
    return typed


def check_builds(cfg: DictConfig) -> None:
    """The network, and the optimizer and its schedule built for one stand-in parameter, so that
    their own checks of their settings (Nesterov momentum without momentum, ...) are one line
    before the run, not a traceback in it. Once every value is typed."""
    import torch

    from src.model.schedulers import takes_total_steps

    model = OmegaConf.select(cfg, "model", default=None)
    if isinstance(model, DictConfig):
        try:  # the network: a layer of a fork's own refuses its value as it is built (nn.Dropout)
            hydra.utils.instantiate(model)
        except Exception as err:  # the class's own words, as a refusal in the run would be said
            raise ConfigError(f"model: {first_line(err.__cause__ or err)}") from err
    built: Any = [torch.zeros(1, requires_grad=True)]
    for key in ("optimizer", "scheduler.scheduler"):
        node = OmegaConf.select(cfg, key, default=None)
        if not isinstance(node, DictConfig) or node.get("_partial_") is not True:
            return  # none, or not a factory the module calls (its own refusal names it)
        try:
            factory = hydra.utils.instantiate(node)
            built = factory(built, **({"total_steps": 1} if takes_total_steps(factory) else {}))
        except Exception as err:  # torch refuses with ValueError, KeyError, RuntimeError, ...
            # A KeyError's own text is its message quoted: its message instead.
            reason = first_line(RuntimeError(*err.args[:1]) if isinstance(err, KeyError) else err)
            raise ConfigError(f"{key}: {node._target_} refuses these settings ({reason})") from err


def _signature(target: Any) -> inspect.Signature:
    try:
        return inspect.signature(target, eval_str=True)
    except (NameError, SyntaxError, AttributeError):  # a name only imported for type checkers
        return inspect.signature(target)


def _declared(param: inspect.Parameter) -> Any:
    """The type of an argument: its annotation, else (unannotated, or not evaluable) true or
    false where its default is; None where nothing says."""
    if param.annotation is not param.empty and not isinstance(param.annotation, str):
        return param.annotation
    return bool if isinstance(param.default, bool) else None


def _source_options(cfg: DictConfig, path: str, target: Any) -> tuple[list[inspect.Parameter], str]:
    """DigitsDataModule passes its **kwargs to the data source named by `source`."""
    from src.data.sources import SOURCES, source_options

    default = inspect.signature(target).parameters["source"].default
    name = OmegaConf.select(cfg, f"{path}.source", default=default)
    if name not in SOURCES:
        raise ConfigError(f"{path}.source={name!r} is not one of {sorted(SOURCES)}")
    return source_options(name), f" with {path}.source={name}"


# Targets whose **kwargs go on to a known callee: what that callee takes (but the arguments the
# target sets itself). Any other target with **kwargs is given the benefit of the doubt.
_KWARGS_TAKEN = {
    # BNStateModule passes its **kwargs to its network, DigitsNet.
    "src.model.module.BNStateModule": ("src.model.network.DigitsNet", ()),
    # TensorBoardLogger passes its **kwargs to SummaryWriter, except log_dir, which it sets.
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": (
        "torch.utils.tensorboard.SummaryWriter",
        ("log_dir",),
    ),
}


# Arguments an entry point passes to a class itself, which a config key would be overridden by
# without a word: the Trainer's loggers, callbacks and plugins come from elsewhere.
_PASSED_BY_THE_RUN = {
    "lightning.pytorch.trainer.trainer.Trainer": {
        "logger": "from the logger group (logger=none, logger=csv, ...)",
        "callbacks": "from the callbacks group (callbacks=none, ~callbacks.NAME, +callbacks/...)",
        "plugins": "its own plugin, which writes checkpoints atomically",
    },
}


def _check_arguments(cfg: DictConfig, path: str, node: DictConfig) -> list[tuple[str, Any]]:
    """Refuse keys of `node` that its `_target_` would reject when instantiated; return the
    given keys with their declared types."""
    key = f"{path}._target_"
    name = OmegaConf.select(cfg, key)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key} must name a class or function, got {name!r}")
    try:
        target = hydra.utils.get_object(name)
    except Exception as err:  # an import can fail in any way its module's code does
        # Hydra's own message spans lines; the error it wraps says what went wrong in one.
        reason = first_line(err.__cause__ or err)
        raise ConfigError(f"{key}={name}: cannot be imported ({reason})") from err
    try:  # the keyword arguments it takes, annotations evaluated where they can be
        arguments = _signature(target).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature to read
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in arguments if p.kind in kinds]
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in arguments)
    note, given = "", [str(k) for k in node.keys()]
    name_of = f"{target.__module__}.{target.__qualname__}"
    passed = [k for k in given if k in _PASSED_BY_THE_RUN.get(name_of, {})]
    if passed:
        value = written(OmegaConf.select(node, passed[0]))
        where = _PASSED_BY_THE_RUN[name_of][passed[0]]
        raise ConfigError(f"{path}.{passed[0]}={value}: the run passes it itself, {where}")
    extra = [k for k in given if not k.startswith("_") and k not in _names(params)]
    if extra and open_kwargs:
        if name_of == "src.data.datamodule.DigitsDataModule":
            more, note = _source_options(cfg, path, target)
        elif name_of in _KWARGS_TAKEN:
            callee, set_by_target = _KWARGS_TAKEN[name_of]
            callee_params = _signature(hydra.utils.get_object(callee)).parameters.values()
            more = [p for p in callee_params if p.name not in set_by_target]
        else:
            more = []
            extra = []  # any other **kwargs: given the benefit of the doubt
        params = [*params, *more]
        extra = [k for k in extra if k not in _names(params)]
    if extra:
        raise ConfigError(f"{path}.{extra[0]}: {name}{note} {_takes_no(extra[0], _names(params))}")
    # Typed by the class's own signature: a new option of any class is checked without a list.
    # An interpolation is checked where its value is set (`${hydra:...}` has none yet here).
    return [
        (f"{path}.{p.name}", _declared(p))
        for p in params
        if p.name in given and not OmegaConf.is_interpolation(node, p.name) and _declared(p)
    ]


def _names(params: list[inspect.Parameter]) -> list[str]:
    return [p.name for p in params]


def _takes_no(argument: str, taken: list[str]) -> str:
    """'takes no argument X (did you mean / it takes: ...)'; long lists are cut short."""
    close = difflib.get_close_matches(argument, taken, n=1)
    if close:
        return f"takes no argument {argument!r} (did you mean {close[0]!r}?)"
    shown = ", ".join(taken[:12]) + (", ..." if len(taken) > 12 else "")
    return f"takes no argument {argument!r} (it takes: {shown or 'nothing'})"


@functools.cache
def _project_keys() -> frozenset[str]:
    """The project's own top-level keys (conf/config.yaml), read once a process: `+tags=[a]`
    replaces its tags, as Hydra does, whichever primary config (a fork's --config-name)
    includes them."""
    return frozenset(OmegaConf.load(Path(CONFIG_DIR) / "config.yaml"))


@functools.cache
def _global_groups() -> frozenset[str]:
    """The groups whose options set keys anywhere (`# @package _global_`): experiment, debug."""
    header = re.compile(r"(#[^\n]*\n)*#\s*@package\s+_global_\s*\n")  # among its first comments
    groups: dict[str, bool] = {}
    for path in Path(CONFIG_DIR).glob("*/*.yaml"):
        here = bool(header.match(path.read_text()))
        groups[path.parent.name] = groups.get(path.parent.name, True) and here
    return frozenset(name for name, every in groups.items() if every)


def check_added_keys(cfg: DictConfig, settings: dict) -> None:
    """A top-level key added with a + (`+max_epochs=3`) is read by nothing: a slip, refused.
    So is an experiment of one's own without its `# @package _global_` line, which files its
    settings under `experiment.`."""
    groups = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
    if placed := sorted(_global_groups() & set(cfg.keys()) - _project_keys()):
        group = placed[0]
        raise ConfigError(
            f"{group}={groups.get(group)}: its settings land under {group}., which nothing reads: "
            f"start its file with the line '# @package _global_', as conf/{group}/*.yaml do"
        )
    typed = str(OmegaConf.to_container(cfg, resolve=False))  # ${key} reads it too
    primary = _project_keys()
    for line in OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []:
        key = str(line).split("=")[0].removeprefix("+")  # ++key: set, whether there or not
        read = (
            key in groups or key in primary or any(c in key for c in "+./@") or "${" + key in typed
        )
        if str(line).startswith("+") and not read:
            near = [k for k, _ in leaves(settings) if k.endswith(f".{key}")]
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{line}: nothing reads a top-level {key}{hint}")


# What a run here cannot honour, and what does the job instead. The module steps its optimizer
# itself (manual optimization, which carries the batch-norm state): Lightning then neither clips
# nor accumulates gradients where it would step it, and refuses to start with either set.
_TRAINER_REFUSED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("sync_batchnorm", bool, "converts torch's BatchNorm layers, which this network does not use "
     "(it carries its own state): set model.sync_batchnorm=true instead"),
    ("gradient_clip_val", bool, "clips gradients where Lightning steps the optimizer, and this "
     "module steps its own (manual optimization, which carries the batch-norm state)"),
    ("accumulate_grad_batches", lambda v: v != 1, "accumulates gradients where Lightning steps "
     "the optimizer, and this module steps its own: use a larger data.batch_size"),
    ("overfit_batches", bool, "replaces the data module's sampler: use data.overfit_batches=N "
     "(debug=overfit), which trains on the first N mini-batches"),
    ("barebones", bool, "switches off the loggers, checkpoints and progress this run is made "
     "of: for speed, use experiment=fast"),
)  # fmt: skip
_CALLBACKS_REFUSED = {
    "GradientAccumulationScheduler": "accumulates gradients where Lightning steps the optimizer, "
    "and this module steps its own: use a larger data.batch_size",
    "StochasticWeightAveraging": "averages the weights but not the batch-norm state this network "
    "carries, and would test weights no checkpoint holds",
}


def check_refused(cfg: DictConfig) -> None:
    """The trainer settings and callbacks listed above, once the values are typed."""
    for key, refused, why in _TRAINER_REFUSED:
        value = OmegaConf.select(cfg, f"trainer.{key}", default=None)  # null: Lightning's own
        if value is not None and refused(value):
            raise ConfigError(f"trainer.{key}={written(value)} {why}")
    from lightning.pytorch.callbacks import ProgressBar

    bars = []
    for name, node in (OmegaConf.select(cfg, "callbacks", default=None) or {}).items():
        kind = str(node.get("_target_", "")).rsplit(".", 1)[-1] if node else ""
        if kind in _CALLBACKS_REFUSED:
            raise ConfigError(f"callbacks.{name}: {kind} {_CALLBACKS_REFUSED[kind]}")
        target = hydra.utils.get_object(node._target_) if kind else None
        if isinstance(target, type) and issubclass(target, ProgressBar):
            bars.append(name)
    if len(bars) > 1:  # Lightning's Trainer refuses it, once the run folder exists
        raise ConfigError(f"callbacks.{bars[1]} is a second progress bar beside callbacks."
                          f"{bars[0]}, and Lightning shows one: switch one off, e.g. "
                          f"~callbacks.{bars[0]}")  # fmt: skip
