"""Each group's values on their own: types and ranges, one `ConfigError` line naming the key.

Also what a checkpoint's stored settings must pass (`check_model_settings`, `check_data_settings`).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Iterator
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import torch
from omegaconf import DictConfig, OmegaConf

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES
from src.errors import ConfigError, first_line

ABSENT = object()


# Keys whose null means something (use the default): every other checked key must hold a value.
NULLABLE = {
    "data.test_batch_size",
    "data.mirrors",  # null: the data set's own mirrors
    "ckpt_path",
    "trainer.limit_train_batches",
    "trainer.limit_test_batches",
    "scheduler.scheduler.total_steps",  # null: every iteration of the run
    "num_threads",  # null: automatic
    "trainer.check_val_every_n_epoch",  # null: by val_check_interval alone, across epochs
}


# The network computes in float32: a setting beyond this becomes inf, then NaN, at the first step.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# Filters a convolution may have: far past any use here, short of a network no memory can hold.
MAX_FILTERS = 4096


def value_at(cfg: DictConfig, key: str) -> Any:
    """The value at `key`; None when the key is absent (not every data source has every key)."""
    value = OmegaConf.select(cfg, key, default=ABSENT, throw_on_missing=False)
    if value is ABSENT:
        return None
    if value is None and key not in NULLABLE:
        raise ConfigError(f"{key} must be set, got null")
    return value


def number_at(cfg: DictConfig, key: str, integer: bool = False) -> float | int | None:
    """The number at `key` (None when absent); ConfigError unless it is one the network can use."""
    value = value_at(cfg, key)
    if value is None:
        return None
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be {kind}, got {written(value)}")
    if integer and not isinstance(value, int):  # 1e3 parses as a float; PyTorch wants an int
        raise ConfigError(f"{key} must be {kind} (written without a decimal point), got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if integer and abs(value) >= 2**63:  # past a C long: torch and Lightning overflow on it
        raise ConfigError(f"{key}={value!r} is out of range: it must fit in 64 bits")
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        raise ConfigError(
            f"{key}={value!r} overflows float32, which the network computes in (largest "
            f"float32: {FLOAT32_MAX:.4g})"
        )
    return value


def require(
    cfg: DictConfig, key: str, ok: Callable[[Any], bool], what: str, integer: bool = False
) -> None:
    value = number_at(cfg, key, integer)
    if value is not None and not ok(value):
        raise ConfigError(f"{key}={value!r} is out of range: it must be {what}")


def require_bool(cfg: DictConfig, key: str) -> None:
    value = value_at(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def require_choice(cfg: DictConfig, key: str, choices: tuple[Any, ...], said: str) -> None:
    """The value at `key` is one of `choices`, of the same type too: Python's `0 == False`
    and `1 == True` would otherwise let 0, 1, 0.0 or 1.0 pass for a switch."""
    value = value_at(cfg, key)
    if value is not None and not _one_of(value, choices):
        raise ConfigError(f"{key}={written(value)} must be {said}")


def written(value: Any) -> str:
    """A value as the command line writes it: true, false and null as in YAML, a string quoted
    (so an empty one shows)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else repr(value)


def _one_of(value: Any, choices: tuple[Any, ...]) -> bool:
    return any(type(value) is type(c) and value == c for c in choices)


def model_parameters() -> dict[str, inspect.Parameter]:
    """`model.<key>` -> its parameter, annotation evaluated: DigitsNet's arguments, which
    BNStateModule passes through, and the module's own. A new network option is typed, checked
    and compared on resume from its own annotation and default, without being listed here."""
    from src.model.module import BNStateModule
    from src.model.network import DigitsNet

    return {
        p.name: p
        for cls in (DigitsNet, BNStateModule)
        for p in inspect.signature(cls, eval_str=True).parameters.values()
        if p.kind is not p.VAR_KEYWORD
    }


def network_is_the_checkpoints(task: str) -> str:
    """Why a command that reads a checkpoint takes no `model.*` setting but `model.bn_stats`."""
    return (
        f"{task} builds the network as the checkpoint was trained (its model.* settings); "
        "leave it out (model.bn_stats is the one chosen here)"
    )


def require_type(cfg: DictConfig, key: str, kind: Any) -> None:
    """The value at `key` is of its declared type `kind` (an annotation): true or false, a (whole)
    number, one of a Literal's choices, a string, null where Optional, or any member of a union.
    A node (a list, or a table that may build an object with `_target_`) is judged only against
    plain types; a class no config value can be takes only a node."""
    if kind is bool:
        require_bool(cfg, key)
    elif kind in (int, float):
        number_at(cfg, key, integer=kind is int)
    elif get_origin(kind) is Literal:
        require_choice(cfg, key, get_args(kind), f"one of: {', '.join(_said(kind))}")
    elif kind is str or get_origin(kind) in (Union, UnionType):
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT:
            return
        members = get_args(kind) or (kind,)
        plain = [m for m in members if m is not type(None)]
        if value is None and len(plain) < len(members):
            return  # Optional: null is the class's own "not set"
        if len(plain) == 1 and (plain[0] in (bool, int, float) or get_origin(plain[0]) is Literal):
            return require_type(cfg, key, plain[0])  # Optional[int]: the int's own checks
        if not any(_takes(m, value) for m in members):
            said = [w for m in members for w in _said(m)]
            alternatives = f"{', '.join(said[:-1])} or {said[-1]}" if len(said) > 1 else said[0]
            raise ConfigError(f"{key}={written(value)} must be {alternatives}")


# The plain types a config value is, and how an error line says each.
_PLAIN = {
    bool: ["true", "false"],
    int: ["a whole number"],
    float: ["a number"],
    str: ["a string"],
    type(None): ["null"],
}


def _takes(kind: Any, value: Any) -> bool:
    """Whether a value of a composed config can be of type `kind`: a list only where a list
    goes, a table where a mapping goes or with a `_target_` that builds the object; benefit of
    the doubt where the type cannot say."""
    if get_origin(kind) is Literal:
        return _one_of(value, get_args(kind))
    if kind in (int, float):  # true is no number here, and 1.0 no whole number
        number = (int, float) if kind is float else int
        return isinstance(value, number) and not isinstance(value, bool)
    if kind in _PLAIN:
        return isinstance(value, kind)
    origin = get_origin(kind) or kind
    if kind is Any or not isinstance(origin, type):  # a TypeVar, an unevaluated name: cannot tell
        return True
    if OmegaConf.is_list(value):
        return issubclass(list, origin) or origin in (tuple, set, frozenset)
    if OmegaConf.is_dict(value):  # a mapping, or a node that builds the object (`_target_`)
        return issubclass(dict, origin) or "_target_" in value
    return isinstance(value, origin)


def _said(kind: Any) -> list[str]:
    if get_origin(kind) is Literal:
        return [str(c).lower() if isinstance(c, bool) else str(c) for c in get_args(kind)]
    return _PLAIN.get(kind) or [getattr(get_origin(kind) or kind, "__name__", str(kind))]


def check_model_settings(cfg: DictConfig) -> None:
    """The `model.*` values, alone: also what a checkpoint's stored settings must pass. Types
    come from the signatures (`model_parameters`); only ranges are written out below."""
    for name, param in model_parameters().items():
        require_type(cfg, f"model.{name}", param.annotation)
    require(cfg, "model.log_block_steps", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "model.log_block_seconds", lambda v: v >= 0, "0 or more")
    require(cfg, "model.num_filters", lambda v: 1 <= v <= MAX_FILTERS,
             f"in [1, {MAX_FILTERS}]", integer=True)  # fmt: skip
    require(cfg, "model.bn_decay", lambda v: 0 < v <= 1, "in (0, 1]")
    require(cfg, "model.bn_epsilon", lambda v: v > 0, "above 0")
    # The digit sources label 0-9: more classes would never be seen, fewer cannot hold the labels.
    require(
        cfg,
        "model.num_classes",
        lambda v: 2 <= v <= NUM_CLASSES,
        f"in [2, {NUM_CLASSES}] (the digit labels are 0-{NUM_CLASSES - 1})",
        integer=True,
    )


def check_data_settings(cfg: DictConfig) -> None:
    """The `data.*` values, alone: also what a checkpoint's stored settings must pass."""
    for key in ("data.resize", "data.grayscale", "data.download", "data.frame"):
        require_bool(cfg, key)
    _check_idx_dataset(cfg)
    require_choice(cfg, "data.on_device", (True, False, "auto"), "auto, true or false")
    require(cfg, "data.batch_size", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "data.test_batch_size", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "data.num_train_per_class", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "data.num_test_per_class", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "data.seed", lambda v: v >= 0, "0 or more", integer=True)
    require(cfg, "data.split_seed", lambda v: v >= 0, "0 or more", integer=True)
    require(cfg, "data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1) (0: no validation)")
    require(cfg, "data.val_seed", lambda v: v >= 0, "0 or more", integer=True)
    require(cfg, "data.overfit_batches", lambda v: v >= 0, "0 or more (0: all)", integer=True)


def check_data_paths(cfg: DictConfig) -> None:
    """The files and folders data=folder|mat|mnist reads are there, before any run folder."""
    source = value_at(cfg, "data.source")
    if source in ("folder", "mat", "mnist"):
        from src.data.sources import check_paths  # as in _check_idx_dataset

        keys = ("root", "train_file", "test_file", "download")
        check_paths(source, {k: value_at(cfg, f"data.{k}") for k in keys})


def _physical_memory() -> int | None:
    """Bytes of RAM in this machine; None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system, or the name is unknown
        return None


def check_data_memory(cfg: DictConfig) -> None:
    """Refuse a built-in data set whose images alone could never fit in this machine's memory."""
    train = value_at(cfg, "data.num_train_per_class") or 0
    test = value_at(cfg, "data.num_test_per_class") or 0
    available = _physical_memory()
    # float32 images, both sets held at once. Generating them briefly needs more (float64), so
    # this is a floor: it refuses only what cannot work, never what might.
    needed = (train + test) * NUM_CLASSES * IMAGE_SIZE * IMAGE_SIZE * 4
    if available is not None and needed > available:
        gib = 2**30
        raise ConfigError(
            f"data.num_train_per_class={train}, data.num_test_per_class={test}: the images "
            f"would need {needed / gib:.1f} GiB of memory, more than this machine's "
            f"{available / gib:.1f} GiB"
        )


def _check_idx_dataset(cfg: DictConfig) -> None:
    """data=mnist's `dataset` (one of the family) and `mirrors` (null or a list of URLs)."""
    dataset, mirrors = value_at(cfg, "data.dataset"), value_at(cfg, "data.mirrors")
    if dataset is None and mirrors is None:
        return
    # Imported here: the data sources (Pillow, scipy) load only for a config that needs them.
    from src.data.sources import dataset_problem, mirrors_problem

    if OmegaConf.is_list(mirrors):
        mirrors = OmegaConf.to_container(mirrors)
    problem = (dataset_problem(dataset) if dataset is not None else None) or mirrors_problem(
        mirrors
    )
    if problem:
        raise ConfigError(problem)


# The other groups' numbers, each one line when wrong: (key, the test, what it must be, whole).
# A key absent from the composed config (another option of its group), or null where null
# means something (NULLABLE), is skipped.
GROUP_NUMBERS: tuple[tuple[str, Callable[[Any], bool], str, bool], ...] = (
    ("optimizer.eps", lambda v: v > 0, "above 0", False),
    ("optimizer.dampening", lambda v: 0 <= v <= 1, "in [0, 1]", False),
    ("scheduler.scheduler.step_size", lambda v: v >= 1, "at least 1 (epochs)", True),
    ("scheduler.scheduler.gamma", lambda v: v > 0, "above 0", False),
    ("scheduler.scheduler.T_max", lambda v: v >= 1, "at least 1", True),
    ("scheduler.scheduler.eta_min", lambda v: v >= 0, "0 or more", False),
    ("scheduler.scheduler.max_lr", lambda v: v >= 0, "0 or more", False),
    ("scheduler.scheduler.pct_start", lambda v: 0 < v < 1, "in (0, 1)", False),
    ("scheduler.scheduler.div_factor", lambda v: v > 0, "above 0", False),
    ("scheduler.scheduler.final_div_factor", lambda v: v > 0, "above 0", False),
    ("scheduler.scheduler.factor", lambda v: 0 < v < 1, "in (0, 1)", False),
    ("scheduler.scheduler.patience", lambda v: v >= 0, "0 or more (epochs)", True),
    ("callbacks.model_checkpoint.every_n_epochs", lambda v: v >= 0, "0 or more (0: last)", True),
    ("callbacks.model_checkpoint.every_n_train_steps", lambda v: v >= 0, "0 or more", True),
    ("callbacks.progress_bar.refresh_rate", lambda v: v >= 0, "0 or more (0: no bar)", True),
    ("callbacks.progress_bar.every_n_iterations", lambda v: v >= 0, "0 or more (0: off)", True),
    ("callbacks.early_stopping.patience", lambda v: v >= 0, "0 or more", True),
    ("callbacks.early_stopping.min_delta", lambda v: v >= 0, "0 or more", False),
    ("trainer.num_sanity_val_steps", lambda v: v >= -1, "-1 (all) or more", True),
    ("trainer.check_val_every_n_epoch", lambda v: v >= 1, "at least 1 (null: not by epochs)",
     True),
    ("scheduler.scheduler.total_steps", lambda v: v >= 1, "at least 1", True),
)  # fmt: skip
# True/false keys whose class's default does not say so (null there), and the reports' switches
# (no class); every other one is typed by its class's own default (`src.config.targets`).
GROUP_BOOLS = (
    "optimizer._partial_",
    "scheduler.scheduler._partial_",
    "callbacks.early_stopping.check_on_train_epoch_end",
    "trainer.enable_model_summary",
    "reports.state_tables",
    "reports.training_progress",
    "reports.first_batch",
    "reports.confusion_matrix",
)


def check_group_values(cfg: DictConfig) -> None:
    """The optimizer's, scheduler's, callbacks', loggers' and trainer's own numbers and switches,
    and `tags`: refused here in one line, not by the class that gets them mid-run."""
    for key in GROUP_BOOLS:
        require_bool(cfg, key)
    require_choice(cfg, "trainer.deterministic", (True, False, "warn"), "true, false or warn")
    fast = value_at(cfg, "trainer.fast_dev_run")  # Lightning's: true, or a number of batches
    if isinstance(fast, int) and not isinstance(fast, bool) and fast < 0:
        raise ConfigError(f"trainer.fast_dev_run={fast} must be true, false or a number of "
                          "batches (1 or more; 0: off)")  # fmt: skip
    for key, ok, what, integer in GROUP_NUMBERS:
        require(cfg, key, ok, what, integer)
    betas = value_at(cfg, "optimizer.betas")
    if betas is not None:
        if not OmegaConf.is_list(betas) or len(betas) != 2:
            raise ConfigError(f"optimizer.betas must be two numbers [b1, b2], got {betas!r}")
        for i in range(2):
            require(cfg, f"optimizer.betas.{i}", lambda v: 0 <= v < 1, "in [0, 1)")
    _check_validation_and_time(cfg)
    tags = value_at(cfg, "tags")
    if tags is not None and not isinstance(tags, str):
        if not OmegaConf.is_list(tags) or not all(isinstance(t, (str, int)) for t in tags):
            raise ConfigError(f"tags must be a list of labels ([a,b]) or one label, got {tags!r}")


def _check_validation_and_time(cfg: DictConfig) -> None:
    """trainer.max_time, val_check_interval: refused by Lightning once the run folder exists."""
    from lightning.pytorch.callbacks import Timer

    for key in ("trainer.max_time", "trainer.val_check_interval"):
        value = value_at(cfg, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(value, (str, dict)):
            continue
        try:  # a duration, 'DD:HH:MM:SS' or {hours: 1, ...}: read by Lightning's own parser
            Timer(duration=value)
        except Exception as err:
            raise ConfigError(f"{key}={written(value)}: {first_line(err)}") from err
    every, what = value_at(cfg, "trainer.val_check_interval"), None
    if isinstance(every, int) and every < 1 or isinstance(every, float) and not 0 < every <= 1:
        what = "must be a whole number of iterations (at least 1) or an epoch's fraction in (0, 1]"
    elif isinstance(every, float) and OmegaConf.select(cfg, "trainer.check_val_every_n_epoch",
                                                       default=ABSENT) is None:  # fmt: skip
        what = "is a fraction of an epoch, and check_val_every_n_epoch=null counts iterations"
    if what:
        raise ConfigError(f"trainer.val_check_interval={every} {what}")


def tag_list(tags: Any) -> list[str]:
    """`tags` as a list of labels: one label given as a plain string is a list of one."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    return [str(t) for t in tags]


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, unresolved value) for every leaf of a plain container."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        yield prefix, node
        return
    for key, value in items:
        yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
