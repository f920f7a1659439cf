"""Checkpoint files: read safely and checked before a run depends on them; written through
`src.io.write_atomically`."""

from __future__ import annotations

import copy
import functools
import inspect
import pickle
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from omegaconf import OmegaConf

from src.errors import CheckpointError, ConfigError, first_line
from src.io import write_atomically
from src.model.state import BN_STATS_MODES

# What every training checkpoint of this project holds (Lightning's keys plus the model's).
REQUIRED_KEYS = ("state_dict", "optimizer_states", "loops", "global_step", "epoch")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin, writing through `write_atomically` instead of fsspec
    (whose local "atomic" save copies across filesystems when `$TMPDIR` is elsewhere)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        write_atomically(checkpoint, Path(path))

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path), map_location=map_location)


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """A training checkpoint of this project, loaded with `weights_only=True`.

    Raises CheckpointError naming `ckpt_path`, the file and the fault for anything else: an empty,
    truncated or foreign file, a bare state_dict, a plain `torch.save` of something else.
    The file is opened once a process while it is unchanged (the checks, the resume step, and
    Lightning's own load all ask for it); each caller gets its own copy, as Lightning's hooks
    edit the checkpoint they are given.
    """
    where = f"ckpt_path={path}"
    if path.is_dir():
        last = [p for p in (path / "checkpoints" / "last.ckpt", path / "last.ckpt") if p.is_file()]
        hint = f" (its last one: {last[0]})" if last else ""
        raise CheckpointError(f"{where}: is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        said = "is not a regular file" if path.exists() else "no such checkpoint file"  # /dev/zero
        if str(path) in ("last", "best"):  # Lightning's names for the checkpoints of its folder
            said += (f" (Lightning's '{path}' is one in the run's own folder, and each run here "
                     "has a new one: give the file, e.g. outputs/train/runs/<date>_<time>/"
                     "checkpoints/last.ckpt)")  # fmt: skip
        raise CheckpointError(f"{where}: {said}")
    stat = path.stat()
    if stat.st_size == 0:
        raise CheckpointError(f"{where}: the file is empty (0 bytes), not a checkpoint")
    # Lightning asks with map_location=None; the weights then reach the model's device as they
    # load (load_state_dict copies, the optimizer moves its state to its parameters' device).
    device = "cpu" if map_location is None else map_location
    content = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, str(device))
    try:
        return copy.deepcopy(_load(content, device))
    except CheckpointError as err:
        raise CheckpointError(f"{where}: {err}") from err.__cause__


@functools.lru_cache(maxsize=2)
def _load(content: tuple[str, int, int, int, str], map_location: Any) -> dict:
    """The checkpoint at `content[0]` as it is now (`content`: path, inode, mtime, size, device),
    loaded and checked; a CheckpointError says the fault, without the file's name."""
    path = Path(content[0])
    try:
        with warnings.catch_warnings():  # torch's on a plain pickle: "please file an issue"
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # random bytes make the unpickler raise almost anything
        if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            # torch's own format, holding Python objects beyond tensors, dicts and numbers
            raise CheckpointError(
                "holds Python objects that a safe load (weights_only=True) refuses; "
                "it was not written by this project"
            ) from err
        # The safe unpickler's refusal of what is no pickle at all advises a load with
        # weights_only=False, which would run whatever the file holds: not repeated.
        # A KeyError's line is a bare byte of the file (text starting "hello": "(101)").
        quiet = isinstance(err, (pickle.UnpicklingError, KeyError))
        said = "" if quiet else f" ({first_line(err)})"
        said = said.split(". ")[0] + ")" if ". " in said else said  # miniz's paragraph: its first
        raise CheckpointError(
            f"cannot be read: the file is damaged, truncated or not a PyTorch checkpoint{said}"
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(
            f"holds a {type(data).__name__}, not a training checkpoint of this project"
        )
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            "holds bare weights (a state_dict), not a training checkpoint with the "
            "optimizer and loop state; it cannot be resumed or evaluated"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    for key in ("state_dict", "bn_statistics", "hyper_parameters", "config", "callbacks", "loops"):
        if not missing and not isinstance(data.get(key) or {}, dict):  # each read as a dict
            raise CheckpointError(f"its {key} is a {type(data[key]).__name__}, not a dict")
    if missing or not any(str(k).startswith("net.") for k in data["state_dict"]):
        what = f"no {', '.join(repr(k) for k in missing)}" if missing else "no network weights"
        raise CheckpointError(f"is not a training checkpoint of this project ({what})")
    if not isinstance((data.get("config") or {}).get("trainer") or {}, dict):
        raise CheckpointError("its config.trainer is not a dict")
    for key, state in (data.get("callbacks") or {}).items():  # Lightning restores them unchecked
        own = str(key).startswith("RunCheckpoint")  # (which ignores a state of another shape)
        stopping = str(key).startswith("EarlyStopping")
        if not (own or isinstance(state, dict)) or (stopping and not _stopping(state)):
            raise CheckpointError(f"its callbacks[{key!r}] is not a state the callback can take")
    _check_counters(data)
    statistics = data.get("bn_statistics") or {}
    if statistics.get("used", "running") not in BN_STATS_MODES:  # which of them it predicts with
        modes = ", ".join(BN_STATS_MODES)
        raise CheckpointError(
            f"its bn_statistics.used={statistics['used']!r} is not one of {modes}"
        )
    if statistics.get("used", "running") != "running" and statistics.get("running") is None:
        # the weights hold the statistics it names, and `running` the ones set aside
        raise CheckpointError(
            f"its bn_statistics.used={statistics['used']!r}, but it holds no "
            "bn_statistics.running (the statistics its weights replaced)"
        )
    weights = _shapes(data["state_dict"])
    layers = {k[4:]: v for k, v in weights.items() if re.fullmatch(r"net\..*running_\w+", k)}
    for name in ("running", "population"):  # each a state the network can take
        if statistics.get(name) is not None and _shapes(statistics[name]) != layers:
            raise CheckpointError(f"its bn_statistics.{name} does not fit its batch-norm layers")
    for name, values in (("", data["state_dict"]), *statistics.items()):
        for key, value in values.items() if isinstance(values, dict) else ():
            if not torch.is_tensor(value):
                continue
            bad = "NaN or infinite values" if not finite(value) else None
            bad = "a sparse tensor" if value.layout != torch.strided else bad
            if (
                bad is None
                and str(key).endswith("running_var")
                and not value.is_complex()
                and (value < 0).any()
            ):
                bad = "negative variances"  # batch norm would take the root of them
            if bad is not None:
                where = f"bn_statistics.{name}.{key}" if name else key
                raise CheckpointError(f"its {where} holds {bad}: no network to predict with or "
                                      "continue from")  # fmt: skip
    return data


def _whole(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def finite(value: torch.Tensor) -> bool:
    """A dense tensor, without NaN or infinite values."""
    return value.layout == torch.strided and bool(value.isfinite().all())


def _check_counters(data: dict) -> None:
    """The counters Lightning restores a run's loops from, unchecked (a text, or a count past
    64 bits, was a traceback in the run), and the version its loading migrates from."""
    version = data.get("pytorch-lightning_version")
    major = re.match(r"(\d+)\.\d", version) if isinstance(version, str) else None
    if major is None or int(major[1]) < 2:
        raise CheckpointError(
            f"its pytorch-lightning_version={version!r} is not that of Lightning 2 or later"
        )
    for key in ("global_step", "epoch"):
        if not _whole(data[key]):
            raise CheckpointError(f"its {key}={data[key]!r} is not a count")
    elapsed = data.get("elapsed_s", 0.0)
    if type(elapsed) not in (int, float) or not 0 <= elapsed <= sys.float_info.max:
        raise CheckpointError(f"its elapsed_s={elapsed!r} is not a number of seconds")
    loops = [data["loops"]]
    while loops:  # each entry a dict, flag or count (under state_dict: loader_position's)
        node = loops.pop()
        if isinstance(node, dict):
            loops += [v for k, v in node.items() if k != "state_dict"]
        elif not (type(node) is bool or _whole(node)):
            raise CheckpointError(f"its loops hold {node!r}, which is not a count")
    fit = data["loops"].get("fit_loop") if isinstance(data["loops"], dict) else None
    epochs = fit.get("epoch_progress") if isinstance(fit, dict) else None
    if not (
        isinstance(epochs, dict)
        and all(isinstance(epochs.get(k), dict) for k in ("total", "current"))
    ):
        raise CheckpointError("its loops hold no fit_loop.epoch_progress of Lightning's")


def _stopping(state: Any) -> bool:
    """EarlyStopping's state holds its fields, each of the kind it writes."""
    reason = state.get("stopping_reason", 0) if isinstance(state, dict) else None
    return (
        isinstance(state, dict)
        and all(type(state.get(k)) is int for k in ("wait_count", "stopped_epoch", "patience"))
        and torch.is_tensor(state.get("best_score"))
        and type(reason) is int
        and reason in [r.value for r in EarlyStoppingReason]
        and isinstance(state.get("stopping_reason_message"), (str, type(None)))
    )


def _shapes(tensors: Any) -> dict[str, Any] | None:
    """Each tensor's shape by name; None for what is no dict."""
    if not isinstance(tensors, dict):
        return None
    return {str(k): getattr(v, "shape", type(v)) for k, v in tensors.items()}


# A checkpoint is data, never code. What it stores is read as plain values and checked against
# what this project's own classes take; nothing read from it chooses what is imported,
# instantiated or called (its stored `_target_` may only name the project's own data module).
DATA_MODULE_TARGET = "src.data.datamodule.DigitsDataModule"
# BNStateModule's arguments that are not settings a checkpoint records (factories from the config).
_NOT_STORED = ("optimizer", "scheduler")
_SCALARS = (bool, int, float, str, type(None))


def _untrusted(where: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: {what}; a checkpoint is data, never code, so it is refused (not run)"
    )


def _plain_value(value: Any, where: str, name: str) -> None:
    """A stored setting must be a scalar or a list of scalars, with no interpolation in it."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, _SCALARS):
            raise _untrusted(where, f"its stored {name} holds a {type(item).__name__}, not a value")
        if isinstance(item, str) and "${" in item:
            raise _untrusted(where, f"its stored {name}={item!r} is an interpolation, not a value")
        if item == "???":  # OmegaConf's mark of a value to be given
            raise _untrusted(where, f"its stored {name} is '???', not a value")


def model_settings(ckpt: dict, path: Path | str = "?") -> dict[str, Any]:
    """The network settings a checkpoint was trained with (`model.*`), checked: only arguments
    of `BNStateModule` and its network that a checkpoint records, each of its type and in range."""
    from src.config.schema import check_model_settings, model_parameters

    where = f"ckpt_path={path}"
    saved = ckpt.get("hyper_parameters") or {}
    if not isinstance(saved, dict):
        raise _untrusted(where, f"its hyper_parameters are a {type(saved).__name__}, not settings")
    params = model_parameters()
    for name, value in saved.items():
        if name in _NOT_STORED:
            raise _untrusted(where, f"hyper_parameters.{name} is not a setting of this network")
        if name not in params:  # e.g. a fork's new option
            raise CheckpointError(
                f"{where}: was trained with model.{name}, which this network does not have "
                "(a network of another version of src/model/network.py?)"
            )
        _plain_value(value, where, f"model.{name}")
    try:  # typed from the signatures, as the command line's model.* is
        check_model_settings(OmegaConf.create({"model": saved}))
    except ConfigError as err:
        raise CheckpointError(f"{where}: its stored {err}") from err
    return dict(saved)


def stored_data_settings(ckpt: dict, path: Path | str = "?") -> dict[str, Any] | None:
    """The training run's `data` settings (None if it recorded none), checked: the project's own
    data module, keys it or its data source takes, plain values in range. Never instantiated as
    stored: the caller builds `DigitsDataModule(**settings)`."""
    from src.config.schema import check_data_settings
    from src.data.datamodule import DigitsDataModule
    from src.data.sources import SOURCES, source_options

    where = f"ckpt_path={path}"
    config = ckpt.get("config")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _untrusted(where, f"its stored config is a {type(config).__name__}, not settings")
    data = config.get("data")
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _untrusted(where, f"its stored config.data is a {type(data).__name__}")
    target = data.get("_target_", DATA_MODULE_TARGET)
    if target != DATA_MODULE_TARGET:
        raise _untrusted(
            where,
            f"its stored config.data._target_={target!r} is not this project's data module "
            f"({DATA_MODULE_TARGET})",
        )
    source = data.get("source", "synthetic")
    if source not in SOURCES:
        known = sorted(SOURCES)
        raise _untrusted(where, f"its stored data.source={source!r} is not one of {known}")
    allowed = set(inspect.signature(DigitsDataModule).parameters) - {"source_options"}
    allowed |= {p.name for p in source_options(source)}
    settings = {k: v for k, v in data.items() if k != "_target_"}
    for name, value in settings.items():
        if not isinstance(name, str) or name not in allowed:
            raise _untrusted(
                where, f"its stored data.{name} is not a setting of data source {source!r}"
            )
        _plain_value(value, where, f"data.{name}")
    # Reading a checkpoint never reaches the network: the data it names are read from disk,
    # fetched only if this command line asks (data.download=true, with its own mirrors).
    if settings.get("download"):
        settings["download"] = False
    settings.pop("mirrors", None)
    try:
        check_data_settings(OmegaConf.create({"data": settings}))
    except ConfigError as err:
        raise CheckpointError(f"{where}: its stored {err}") from err
    return settings


def _network(settings: dict[str, Any]) -> tuple[dict[str, tuple[int, ...]], list[tuple]]:
    """The network `settings` build, built on the meta device (no memory): each tensor's shape,
    and each layer's name and type."""
    from src.model.module import BNStateModule

    with torch.device("meta"):
        module = BNStateModule(**settings)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return shapes, [(n, type(m).__name__) for n, m in module.named_modules()]


def check_network_matches(ckpt: dict, model_cfg: Any, path: Path) -> None:
    """CheckpointError unless the checkpoint's weights are those of the network `model_cfg`
    builds, key for key and shape for shape (what `load_state_dict` would refuse), in the layers
    it was trained in (another kind of layer of the same shape would take them without a word);
    the module itself says which settings shape it, so no list of them is kept here."""
    from src.config.schema import model_parameters, written

    # A setting the checkpoint does not record (an option added since) had its default.
    defaults = {k: p.default for k, p in model_parameters().items() if k not in _NOT_STORED}
    saved = {**defaults, **model_settings(ckpt, path)}
    given = {k: model_cfg.get(k) for k in saved if model_cfg is not None and k in model_cfg}
    want = {**saved, **{k: v for k, v in given.items() if v is not None}}
    have = {k: tuple(getattr(v, "shape", ())) for k, v in ckpt["state_dict"].items()}
    (shapes, layers), trained = _network(want), _network(saved)
    if shapes == have and (layers == trained[1] or trained[0] != have):
        return  # (the layers are compared where the stored settings describe the weights)
    # Each differing setting that alone changes a shape or a layer (num_filters, pool, ...).
    names = [k for k in want if want[k] != saved[k] and _network({**saved, k: want[k]}) != trained]
    if not names:
        raise CheckpointError(f"ckpt_path={path}: its weights do not fit the network it describes")
    was, now = ([f"model.{n}={written(values[n])}" for n in names] for values in (saved, want))
    raise CheckpointError(
        f"ckpt_path={path}: was trained with {', '.join(was)}, but this run has {', '.join(now)}; "
        f"a checkpoint only continues with the same network (set {' '.join(was)})"
    )


def loader_position(ckpt: dict, path: Path | str = "?") -> dict[str, int] | None:
    """The training data loader's saved position (EpochLoader.state_dict), if any, checked:
    whole numbers in range (CheckpointError otherwise: it is read from a file)."""
    where = f"ckpt_path={path}"
    try:
        loops = ckpt.get("loops") or {}
        states = (loops.get("fit_loop") or {}).get("state_dict", {}).get("combined_loader") or []
        position = states[0] if states else None
    except (AttributeError, TypeError, KeyError, IndexError) as err:
        raise _untrusted(where, f"its loops state is malformed ({err})") from err
    if position is None:
        return None
    lowest = {"epoch": 0, "batches_done": 0, "batch_size": 1, "num_samples": 0, "seed": 0,
              "world_size": 1}  # fmt: skip
    if not isinstance(position, dict):
        raise _untrusted(where, "its data loader position is not a table of numbers")
    for name, value in position.items():
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < lowest.get(name, 0) or name not in lowest:
            raise _untrusted(where, f"its data loader position {name}={value!r:.40} is not valid")
    for name in ("epoch", "batches_done", "batch_size", "num_samples"):
        if name not in position:
            raise _untrusted(where, f"its data loader position has no {name}")
    return position
