"""Checks on a composed config that turn bad values into one clear line before any work starts."""

from __future__ import annotations

import contextlib
import copy
import difflib
import errno
import inspect
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES
from src.errors import ConfigError, first_line, one_line
from src.model.state import BN_STATS_MODES

_ABSENT = object()
# Keys whose null means something (use the default): every other checked key must hold a value.
NULLABLE = {
    "data.test_batch_size",
    "ckpt_path",
    "trainer.limit_train_batches",
    "trainer.limit_test_batches",
}
# The network computes in float32: a setting beyond this becomes inf, then NaN, at the first step.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# Groups train.py instantiates; the optimizer may go (model.optimizer=null: SGD defaults).
REQUIRED_TARGETS = ("data", "model", "trainer")
# Filters a convolution may have: far past any use here, short of a network no memory can hold.
MAX_FILTERS = 4096
# Stands in for Hydra's runtime.output_dir, which only exists once Hydra has made the run folder.
_PLACEHOLDER_OUTPUT_DIR = "<run folder>"


def _get(cfg: DictConfig, key: str) -> Any:
    """The value at `key`; None when the key is absent (not every data source has every key)."""
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if value is _ABSENT:
        return None
    if value is None and key not in NULLABLE:
        raise ConfigError(f"{key} must be set, got null")
    return value


def _number(cfg: DictConfig, key: str, integer: bool = False) -> float | int | None:
    """The number at `key` (None when absent); ConfigError unless it is one the network can use."""
    value = _get(cfg, key)
    if value is None:
        return None
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be {kind}, got {value!r}")
    if integer and not isinstance(value, int):  # 1e3 parses as a float; PyTorch wants an int
        raise ConfigError(f"{key} must be {kind} (written without a decimal point), got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        raise ConfigError(
            f"{key}={value!r} overflows float32, which the network computes in (largest "
            f"float32: {FLOAT32_MAX:.4g})"
        )
    return value


def _require(
    cfg: DictConfig, key: str, ok: Callable[[Any], bool], what: str, integer: bool = False
) -> None:
    value = _number(cfg, key, integer)
    if value is not None and not ok(value):
        raise ConfigError(f"{key}={value!r} is out of range: it must be {what}")


def _boolean(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def _unset(node: Any, prefix: str = "") -> list[str]:
    """Keys still at `???` (Hydra's mandatory value), found without resolving anything."""
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in _unset(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if node == "???" else []


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings.pop("hydra", None)
    unset = _unset(settings)
    if unset:
        raise ConfigError(f"{unset[0]} must be set: add {unset[0]}=... to the command line")
    # First: every check below reads resolved values, and an unresolvable one would be a traceback.
    _check_resolvable(cfg, settings)
    _check_targets(cfg, settings)
    _check_group_entries(settings)
    _boolean(cfg, "test")
    _boolean(cfg, "train")
    _check_train_or_test(cfg)
    interval = _get(cfg, "scheduler.interval")
    if interval is not None and interval not in ("step", "epoch"):
        raise ConfigError(
            f"scheduler.interval={interval!r} must be 'step' (after every iteration) or 'epoch'"
        )
    # A callback that watches a validation metric (EarlyStopping on val/acc) needs the split.
    for name, node in (OmegaConf.select(cfg, "callbacks", default=None) or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        fraction = _get(cfg, "data.val_fraction") or 0
        if isinstance(monitor, str) and monitor.startswith("val/") and not fraction:
            raise ConfigError(
                f"callbacks.{name} monitors {monitor}, which needs a validation split, but "
                f"data.val_fraction={fraction}: set it above 0 (e.g. data.val_fraction=0.1)"
            )
    check_model_settings(cfg)
    check_data_settings(cfg)
    _check_optuna_storage(cfg)
    _require(cfg, "seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)", integer=True)
    if OmegaConf.select(cfg, "num_threads", default=None) is not None:  # null: automatic
        _require(cfg, "num_threads", lambda v: v >= 1, "at least 1 (null: automatic)", True)
    _require(cfg, "optimizer.lr", lambda v: v >= 0, "0 or more")
    _require(cfg, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _require(cfg, "optimizer.weight_decay", lambda v: v >= 0, "0 or more")
    _require(cfg, "trainer.max_epochs", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "trainer.log_every_n_steps", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "callbacks.bn_state_monitor.check_after", lambda v: v >= 1, "at least 1", True)
    _check_batch_limits(cfg)
    _check_memory(cfg)
    _check_checkpoint(cfg)
    _check_accelerator(cfg)
    _check_cuda_graph(cfg)


def _as_config(cfg: DictConfig | dict) -> DictConfig:
    return cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)


def check_model_settings(cfg: DictConfig | dict) -> None:
    """The `model.*` values, alone: also what a checkpoint's stored settings must pass."""
    cfg = _as_config(cfg)
    for key in ("model.update_state", "model.cuda_graph", "model.sync_batchnorm"):
        _boolean(cfg, key)
    _require(cfg, "model.log_block_steps", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "model.log_block_seconds", lambda v: v >= 0, "0 or more")
    bn_stats = _get(cfg, "model.bn_stats")
    if bn_stats is not None and bn_stats not in BN_STATS_MODES:
        raise ConfigError(f"model.bn_stats={bn_stats!r} must be 'running' or 'population'")
    _require(cfg, "model.num_filters", lambda v: 1 <= v <= MAX_FILTERS,
             f"in [1, {MAX_FILTERS}]", integer=True)  # fmt: skip
    _require(cfg, "model.bn_decay", lambda v: 0 < v <= 1, "in (0, 1]")
    _require(cfg, "model.bn_epsilon", lambda v: v > 0, "above 0")
    # The digit sources label 0-9: more classes would never be seen, fewer cannot hold the labels.
    _require(
        cfg,
        "model.num_classes",
        lambda v: 2 <= v <= NUM_CLASSES,
        f"in [2, {NUM_CLASSES}] (the digit labels are 0-{NUM_CLASSES - 1})",
        integer=True,
    )


def check_data_settings(cfg: DictConfig | dict) -> None:
    """The `data.*` values, alone: also what a checkpoint's stored settings must pass."""
    cfg = _as_config(cfg)
    for key in ("data.resize", "data.grayscale"):
        _boolean(cfg, key)
    on_device = _get(cfg, "data.on_device")
    if on_device is not None and on_device not in (True, False, "auto"):
        raise ConfigError(f"data.on_device={on_device!r} must be auto, true or false")
    _require(cfg, "data.batch_size", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.test_batch_size", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.num_train_per_class", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.num_test_per_class", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.seed", lambda v: v >= 0, "0 or more", integer=True)
    _require(cfg, "data.split_seed", lambda v: v >= 0, "0 or more", integer=True)
    _require(cfg, "data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1) (0: no validation)")
    _require(cfg, "data.val_seed", lambda v: v >= 0, "0 or more", integer=True)
    _require(cfg, "data.overfit_batches", lambda v: v >= 0, "0 or more (0: all)", integer=True)


def _check_cuda_graph(cfg: DictConfig) -> None:
    """`model.cuda_graph=true` replays one captured training step on one GPU; refuse what it
    cannot honour, in one line, rather than fall back silently."""
    if not _get(cfg, "model.cuda_graph"):
        return
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto").lower()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    problem = None
    if not torch.cuda.is_available():
        problem = (
            f"PyTorch sees no CUDA GPU on this machine (torch {torch.__version__}); CUDA graphs "
            "capture GPU work only: drop model.cuda_graph=true to train on the CPU"
        )
    elif not on_gpu:
        problem = f"trainer.accelerator={accelerator} runs on the CPU: use trainer=gpu"
    elif _device_count(cfg, accelerator) != 1 or _get(cfg, "trainer.strategy") not in (
        None,
        *ONE_PROCESS_STRATEGIES,
    ):
        problem = "it captures one process's step: use trainer=gpu (one GPU), not DDP"
    elif _get(cfg, "model.sync_batchnorm"):
        problem = "model.sync_batchnorm=true needs collectives the graph cannot hold: set it false"
    elif _get(cfg, "data.on_device") is False:
        problem = "the graph indexes data resident on the GPU: set data.on_device=auto or true"
    else:
        scheduler = OmegaConf.select(cfg, "scheduler.scheduler", default=None)
        if scheduler:
            problem = (
                "a learning-rate schedule changes the rate the graph captured as a constant: "
                "use scheduler=none"
            )
    if problem:
        raise ConfigError(f"model.cuda_graph=true: {problem}")


# Groups of named entries that train.py builds one by one: an entry without `_target_` would be
# skipped without a word (`+callbacks.early_stopping.monitor=val/acc` without its group).
NAMED_ENTRY_GROUPS = ("callbacks", "logger")


def _check_group_entries(settings: dict) -> None:
    """Every entry of callbacks and logger names what to build (null or empty: switched off)."""
    for group in NAMED_ENTRY_GROUPS:
        entries = settings.get(group)
        if not isinstance(entries, dict):
            continue
        for name, node in entries.items():
            if node is None or node == {} or (isinstance(node, dict) and "_target_" in node):
                continue
            held = ", ".join(f"{k}={v}" for k, v in _leaves(node)) if node != "" else "nothing"
            options = Path(__file__).resolve().parents[1] / "conf" / group / str(name)
            if options.is_dir():
                names = sorted(p.stem for p in options.glob("*.yaml"))
                fix = f"add it with +{group}/{name}={names[0] if names else 'NAME'}"
            else:
                fix = f"set {group}.{name}._target_=CLASS or remove it with ~{group}.{name}"
            raise ConfigError(
                f"{group}.{name} has no _target_, so nothing would be built from it (it holds "
                f"{held}): {fix}"
            )


def _check_train_or_test(cfg: DictConfig) -> None:
    """train=false tests the network of a checkpoint: it needs one, and testing."""
    if _get(cfg, "train") is not False:
        return
    if _get(cfg, "ckpt_path") is None:
        raise ConfigError(
            "train=false needs ckpt_path=PATH: the checkpoint whose network is tested instead "
            "of training one"
        )
    if _get(cfg, "test") is False:
        raise ConfigError("train=false with test=false would do nothing: set test=true")


def _check_optuna_storage(cfg: DictConfig) -> None:
    """hparams_search=optuna: hydra-optuna-sweeper 1.3 needs optuna<3, whose database storage
    (RDBStorage) fails with SQLAlchemy 2 (an AssertionError on opening); in memory works."""
    storage = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    if not storage or "optuna" not in target or str(storage).startswith("redis"):
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


def _check_checkpoint(cfg: DictConfig) -> None:
    """A `ckpt_path` to resume from must be a sound checkpoint this run can continue."""
    from src.checkpoint import check_network_matches, loader_position, read_checkpoint

    path = _get(cfg, "ckpt_path")
    if path is None:
        return
    ckpt = read_checkpoint(Path(str(path)))  # CheckpointError: one line naming the fault
    check_network_matches(ckpt, cfg.get("model"), Path(str(path)))
    position = loader_position(ckpt)
    if not position or _get(cfg, "train") is False:  # train=false: only tested, not resumed
        return
    per_epoch = position["num_samples"] // (position["batch_size"] * position.get("world_size", 1))
    if not 0 < position["batches_done"] < per_epoch:
        return  # an epoch boundary: the next epoch may be cut differently
    for key, saved in (("data.batch_size", "batch_size"), ("data.shuffle_seed", "seed")):
        value = _get(cfg, key)
        if value is not None and value != position[saved]:
            raise ConfigError(
                f"{key}={value}: ckpt_path={path} stopped in the middle of epoch "
                f"{position['epoch'] + 1}, whose batches were cut with {key}={position[saved]}; "
                f"resume with {key}={position[saved]} (or from an end-of-epoch checkpoint)"
            )


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, unresolved value) for every leaf of a plain container."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        yield prefix, node
        return
    for key, value in items:
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))


@contextlib.contextmanager
def _hydra_runtime(cfg: DictConfig) -> Iterator[None]:
    """Let `${hydra:...}` resolve before Hydra has set its runtime config (at preflight)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() or "hydra" not in cfg:
        yield  # inside a run: the real runtime config answers
        return
    probe = copy.deepcopy(cfg)
    with open_dict(probe), read_write(probe):
        probe.hydra.runtime.output_dir = _PLACEHOLDER_OUTPUT_DIR
    instance = HydraConfig.instance()
    instance.set_config(probe)
    try:
        yield
    finally:
        instance.cfg = None


def _check_resolvable(cfg: DictConfig, settings: dict) -> None:
    """Every interpolation outside the `hydra` node resolves (unknown keys, resolvers, env vars)."""
    with _hydra_runtime(cfg):
        for key, raw in _leaves(settings):
            if not (isinstance(raw, str) and "${" in raw):
                continue
            try:
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception as err:  # resolvers raise anything; OmegaConf wraps most of it
                raise ConfigError(f"{key}={raw}: cannot be resolved ({first_line(err)})") from err


def _target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """(dotted key, node) for every node with a `_target_`, nested ones included."""
    if not isinstance(node, dict):
        return
    if "_target_" in node:
        yield path, node
    for key, value in node.items():
        yield from _target_nodes(value, f"{path}.{key}" if path else str(key))


def _check_targets(cfg: DictConfig, settings: dict) -> None:
    """Each group train.py builds names a class, and no node holds a key its class does not take."""
    for group in (*REQUIRED_TARGETS, "optimizer"):
        node = settings.get(group, _ABSENT)
        if node is _ABSENT and group == "optimizer":
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"{group} must be set: choose one with +{group}=NAME (see conf/{group})"
            )
        if "_target_" not in node:
            raise ConfigError(
                f"{group}._target_ must be set: the {group} config names no class to build"
            )
    for path, node in _target_nodes(settings):
        _check_arguments(cfg, path, node)


def _parameters(target: Any) -> tuple[list[str], bool] | None:
    """The keyword arguments `target` takes and whether it takes **kwargs; None if unknowable."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature to read
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = signature.parameters.values()
    names = [p.name for p in params if p.kind in kinds]
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _source_options(cfg: DictConfig, path: str, target: Any) -> tuple[list[str], str]:
    """DigitsDataModule passes its **kwargs to the data source named by `source`."""
    from src.data.sources import SOURCES

    default = inspect.signature(target).parameters["source"].default
    name = OmegaConf.select(cfg, f"{path}.source", default=default)
    if name not in SOURCES:
        raise ConfigError(f"{path}.source={name!r} is not one of {sorted(SOURCES)}")
    # The first argument, cache_dir, is passed by the data module itself.
    return list(inspect.signature(SOURCES[name]).parameters)[1:], f" with {path}.source={name}"


def _summary_writer_options(cfg: DictConfig, path: str, target: Any) -> tuple[list[str], str]:
    """TensorBoardLogger passes its **kwargs to SummaryWriter, except log_dir, which it sets."""
    from torch.utils.tensorboard import SummaryWriter

    return [n for n in inspect.signature(SummaryWriter).parameters if n != "log_dir"], ""


# Targets whose **kwargs go on to a known callee: what that callee takes, and a note for the
# message. Any other target with **kwargs is given the benefit of the doubt.
_KWARGS_TAKEN: dict[str, Callable[[DictConfig, str, Any], tuple[list[str], str]]] = {
    "src.data.datamodule.DigitsDataModule": _source_options,
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger": _summary_writer_options,
}


def _check_arguments(cfg: DictConfig, path: str, node: dict) -> None:
    """Refuse keys of `node` that its `_target_` would reject when instantiated."""
    from hydra._internal.utils import _locate

    key = f"{path}._target_"
    name = OmegaConf.select(cfg, key)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{key} must name a class or function, got {name!r}")
    try:
        target = _locate(name)
    except Exception as err:  # an import can fail in any way its module's code does
        # Hydra's own message spans lines; the error it wraps says what went wrong in one.
        reason = first_line(err.__cause__ or err)
        raise ConfigError(f"{key}={name}: cannot be imported ({reason})") from err
    found = _parameters(target)
    if found is None:
        return
    taken, open_kwargs = found
    note = ""
    extra = [k for k in map(str, node) if not k.startswith("_") and k not in taken]
    if extra and open_kwargs:
        passed_on = _KWARGS_TAKEN.get(f"{target.__module__}.{target.__qualname__}")
        if passed_on is None:
            return
        more, note = passed_on(cfg, path, target)
        taken = [*taken, *more]
        extra = [k for k in extra if k not in taken]
    if extra:
        raise ConfigError(f"{path}.{extra[0]}: {name}{note} {_takes_no(extra[0], taken)}")


def _takes_no(argument: str, taken: list[str]) -> str:
    """'takes no argument X (did you mean / it takes: ...)'; long lists are cut short."""
    close = difflib.get_close_matches(argument, taken, n=1)
    if close:
        return f"takes no argument {argument!r} (did you mean {close[0]!r}?)"
    shown = ", ".join(taken[:12]) + (", ..." if len(taken) > 12 else "")
    return f"takes no argument {argument!r} (it takes: {shown or 'nothing'})"


def _check_batch_limits(cfg: DictConfig) -> None:
    """Lightning's limit_*_batches: null, a count or a fraction, and never zero where used."""
    for split, used in (("train", True), ("test", bool(_get(cfg, "test")))):
        key = f"trainer.limit_{split}_batches"
        value = _number(cfg, key)
        if value is None:
            continue
        if value < 0 or (isinstance(value, float) and value > 1):
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be null (all batches), a whole number "
                "of batches, or a fraction in [0.0, 1.0]"
            )
        if value == 0 and split == "train":
            raise ConfigError(
                f"{key}={value!r} leaves no training batches: use null (all), a number of "
                "batches, or a fraction above 0"
            )
        if value == 0 and used:
            raise ConfigError(
                f"{key}={value!r} leaves no test batches while test=true: use test=false to "
                "skip testing"
            )


def _physical_memory() -> int | None:
    """Bytes of RAM in this machine; None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system, or the name is unknown
        return None


def _check_memory(cfg: DictConfig) -> None:
    """Refuse a built-in data set whose images alone could never fit in this machine's memory."""
    train = _get(cfg, "data.num_train_per_class") or 0
    test = _get(cfg, "data.num_test_per_class") or 0
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


def _check_accelerator(cfg: DictConfig) -> None:
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu or trainer=ddp) but PyTorch sees no "
            f"CUDA GPU on this machine (torch {torch.__version__}); use trainer=cpu, trainer=auto "
            "or, for several CPU processes, trainer=ddp_cpu"
        )
    _check_processes(cfg, accelerator)


# What `trainer.strategy` may be: one process, or DDP with one process a device launched by
# Lightning (`ddp`). The others would run differently from what this project reports: `dp`,
# `fsdp` and `deepspeed` shard or split the model; `ddp_spawn`/`ddp_fork` run training in
# processes whose state never reaches the one that writes metrics.json and handles signals.
ONE_PROCESS_STRATEGIES = ("auto", "single_device")
DDP_STRATEGY = "ddp"
_USE_DDP = "use trainer=ddp_cpu (CPU processes) or trainer=ddp (GPUs)"


def _device_count(cfg: DictConfig, accelerator: str) -> int:
    """Processes a node: what Lightning makes of `trainer.devices` for this accelerator."""
    devices = _get(cfg, "trainer.devices")
    if devices is None:
        return 1
    if isinstance(devices, DictConfig) or isinstance(devices, bool):
        raise ConfigError(f"trainer.devices must be a number, a list or 'auto', got {devices!r}")
    if OmegaConf.is_list(devices):
        devices = list(devices)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        from lightning.fabric.utilities.device_parser import _parse_gpu_ids

        if devices == "auto":
            return torch.cuda.device_count()
        try:
            ids = _parse_gpu_ids(devices, include_cuda=True)
        except Exception as err:  # Lightning's MisconfigurationException and TypeError
            raise ConfigError(f"trainer.devices={devices}: {first_line(err)}") from err
        return len(ids or [])
    if accelerator not in ("cpu", "auto"):
        return 1  # mps and others: Lightning checks them itself
    if devices == "auto":
        return 1
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(
            f"trainer.devices={devices}: on the CPU it is the number of processes, a whole "
            "number of 1 or more (trainer=ddp_cpu: 2)"
        )
    return devices


def _check_processes(cfg: DictConfig, accelerator: str) -> None:
    """Several processes only with DDP (and DDP only with several), in a single run; no setting
    of the trainer's that would silently change what the run does."""
    strategy = _get(cfg, "trainer.strategy")
    if strategy is None:
        strategy = "auto"
    if not isinstance(strategy, str):
        raise ConfigError(
            f"trainer.strategy must be the name of a strategy (auto or ddp), got {strategy!r}"
        )
    strategy = strategy.lower()
    if strategy not in (*ONE_PROCESS_STRATEGIES, DDP_STRATEGY):
        raise ConfigError(
            f"trainer.strategy={strategy} is not supported: use trainer.strategy=auto (one "
            f"process), or for data-parallel training {_USE_DDP} (strategy ddp)"
        )
    _require(cfg, "trainer.num_nodes", lambda v: v >= 1, "at least 1", integer=True)
    nodes = _get(cfg, "trainer.num_nodes") or 1
    devices = _get(cfg, "trainer.devices")
    processes = _device_count(cfg, accelerator) * nodes
    if processes < 1:
        raise ConfigError(f"trainer.devices={devices} selects no device on this machine")
    if strategy != DDP_STRATEGY and nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes={nodes} needs trainer.strategy=ddp (got {strategy}): {_USE_DDP}"
        )
    if strategy != DDP_STRATEGY and processes > 1:
        # Each process would carry its own batch-norm state and the checkpoint hold rank 0's.
        raise ConfigError(
            f"trainer.devices={devices} starts {processes} processes, which needs "
            f"trainer.strategy=ddp (got {strategy}): {_USE_DDP}"
        )
    if strategy == DDP_STRATEGY and processes == 1:
        raise ConfigError(
            f"trainer.strategy=ddp with a single process (trainer.devices={devices}) would run "
            f"differently from a plain run for nothing: {_USE_DDP} for several processes, or "
            "set trainer.strategy=auto"
        )
    if _get(cfg, "trainer.sync_batchnorm"):
        raise ConfigError(
            "trainer.sync_batchnorm=true converts torch's BatchNorm layers, which this network "
            "does not use (it carries its own state): set model.sync_batchnorm=true instead"
        )
    _check_resume_processes(cfg, processes)
    if processes == 1:
        return
    if _get(cfg, "trainer.use_distributed_sampler") is not False:
        raise ConfigError(
            "trainer.use_distributed_sampler must be false with several processes: the data "
            "module deals each process its shard of the epoch itself"
        )
    _check_multirun_ddp()


def _check_multirun_ddp() -> None:
    """Lightning's `ddp` launcher re-runs the command line in each child process; inside a Hydra
    multirun that command is the whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            "trainer.strategy=ddp cannot run inside a Hydra multirun (each process Lightning "
            "launches would re-run the whole sweep): run each configuration as its own run"
        )


def _check_resume_processes(cfg: DictConfig, processes: int) -> None:
    """A run stopped inside an epoch resumes only with the number of processes that cut it."""
    from src.checkpoint import loader_position, read_checkpoint

    path = _get(cfg, "ckpt_path")
    # train=false, src.evaluate, src.predict, src.export (no `train` key): read, not resumed
    if path is None or _get(cfg, "train") in (False, None):
        return
    position = loader_position(read_checkpoint(Path(str(path))))
    if not position:
        return
    saved = position.get("world_size", 1)
    per_epoch = position["num_samples"] // (position["batch_size"] * saved)
    if saved != processes and 0 < position["batches_done"] < per_epoch:
        raise ConfigError(
            f"trainer.devices={_get(cfg, 'trainer.devices')}: ckpt_path={path} stopped in the "
            f"middle of epoch {position['epoch'] + 1}, whose batches were dealt to {saved} "
            f"process(es); resume with {saved} (or from an end-of-epoch checkpoint)"
        )


def _compositions(overrides: list[str]) -> list[list[str]]:
    """The override lists to try: every value of every sweep appears in at least one of them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parsed = OverridesParser.create().parse_overrides(overrides)
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}

    def line(o: Any, value: str) -> str:
        return f"{prefix.get(o.type, '')}{o.get_key_element()}={value}"

    values = [_sweep_values(o) if o.is_sweep_override() else None for o in parsed]
    base = [line(o, v[0]) if v else o.input_line for o, v in zip(parsed, values)]
    runs = [base]
    for i, (o, vs) in enumerate(zip(parsed, values)):
        for v in (vs or [])[1:]:
            runs.append([*base[:i], line(o, v), *base[i + 1 :]])
    return runs


def _sweep_values(o: Any) -> list[str]:
    """A sweep's values: every one of a list or range; an interval's two ends, the upper one just
    below it for floats (Optuna samples a float interval in [start, end), an int one in both)."""
    from hydra.core.override_parser.types import IntervalSweep

    value = o.value()
    if not isinstance(value, IntervalSweep):
        return list(o.sweep_string_iterator())
    start, end = value.start, value.end
    if isinstance(start, int) and isinstance(end, int):
        return [str(start), str(end)]
    return [repr(float(start)), repr(math.nextafter(float(end), float(start)))]


def _sweeper_params(cfg: DictConfig, overrides: list[str], multirun: bool) -> list[str]:
    """A multirun's `hydra.sweeper.params` (hparams_search=optuna's search space) as override
    lines, but for the keys the command line sets itself (they replace the config's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not (multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN):
        return []
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
    return [f"{key}={value}" for key, value in params.items() if key not in given]


def _probe_folder(folder: Path) -> None:
    """Create `folder` and its missing parents for real, then remove what this created."""
    missing = []
    existing = Path(os.path.abspath(folder))  # relative to the working directory, as Hydra does
    while not os.path.exists(existing):
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    created: list[Path] = []
    try:
        if missing:
            for path in reversed(missing):
                path.mkdir()
                created.append(path)
        else:  # Hydra writes into a run folder that already exists: try writing there too
            created.append(Path(tempfile.mkdtemp(dir=existing)))
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):  # someone else wrote there meanwhile: leave it
                path.rmdir()


def check_output_folder(cfg: DictConfig, multirun: bool) -> None:
    """Raise ConfigError unless the folder Hydra is about to create (run or sweep) can be made."""
    from hydra.types import RunMode

    if multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN:
        key, what = "hydra.sweep.dir", "sweep folder"
    else:
        key, what = "hydra.run.dir", "run folder"
    try:
        folder = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception as err:  # resolvers raise anything; OmegaConf wraps most of it
        raise ConfigError(f"{key}: cannot be resolved ({first_line(err)})") from err
    if folder is None or not str(folder).strip():
        raise ConfigError(f"{key} must be set to the folder the run writes into")
    try:
        _probe_folder(Path(str(folder)))
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        raise ConfigError(
            f"{key}={folder}: cannot create the {what} ({where}{err.strerror})"
        ) from err


def _check_sweep_mode(cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    """Sweep values need a multirun; an Optuna search needs a validation metric to maximise."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    mode = OmegaConf.select(cfg, "hydra.mode", default=None)
    multirun = multirun or str(mode).endswith("MULTIRUN")
    if not multirun:
        for o in OverridesParser.create().parse_overrides(overrides):
            if o.is_sweep_override():
                raise ConfigError(
                    f"{o.input_line} is a sweep: add --multirun "
                    f"(or give {o.key_or_group} one value)"
                )
        return
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    if "optuna" not in sweeper.lower():
        return
    metric = OmegaConf.select(cfg, "optimized_metric", default=None)
    if not metric or str(metric).startswith("test/"):
        got = f"optimized_metric={metric}" if metric else "optimized_metric is not set"
        raise ConfigError(
            f"{got}: an Optuna search needs a validation metric to maximise, not the test set's; "
            "use hparams_search=optuna (val/acc on a 10% split), or optimized_metric=val/acc "
            "with data.val_fraction=0.1"
        )


def preflight(
    argv: list[str],
    config_dir: str,
    config_name: str,
    check: Callable[[DictConfig], Any] = check_config,
) -> None:
    """Compose the config the CLI will run (each sweep value too) and check it with `check`
    (default: check_config), then check that its run (or sweep) folder can be created.

    Raises ConfigError with one line for an unknown group, option or key, or a bad value, or a
    run folder that cannot be created, so the user sees that line instead of Hydra's multi-line
    report, and no run directory is made.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    args = get_args_parser().parse_args(argv)
    if args.config_path or args.config_dir or args.help or args.hydra_help or args.info:
        return  # another search path or an informational call: leave it all to Hydra
    try:
        runs = _compositions(args.overrides)
    except HydraException as err:
        raise ConfigError(one_line(err)) from err
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            done: dict[tuple[str, ...], DictConfig] = {}

            def composed(overrides: list[str]) -> DictConfig:
                """Each composition once (a plain run needs one; each costs a few 0.1 s)."""
                key = tuple(overrides)
                if key not in done:
                    try:
                        done[key] = compose(args.config_name or config_name, overrides, True)
                    except (HydraException, ValueError) as err:  # ValueError: callbacks=null
                        raise ConfigError(one_line(err)) from err
                return done[key]

            # The config's own search space (hparams_search=optuna) is swept too: each value of it.
            searched = _sweeper_params(composed(runs[0]), args.overrides, args.multirun)
            if searched:
                try:
                    runs = _compositions([*searched, *args.overrides])
                except HydraException as err:
                    raise ConfigError(f"hydra.sweeper.params: {one_line(err)}") from err
            first = composed(runs[0])
            _check_sweep_mode(first, args.overrides, args.multirun)
            for overrides in runs:
                cfg = composed(overrides)
                check(cfg)
                if not args.cfg:  # --cfg only prints the config: Hydra makes no folder then
                    check_output_folder(cfg, args.multirun)
    finally:
        GlobalHydra.instance().clear()
