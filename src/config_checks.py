"""Checks on a composed config that turn bad values into one clear line before any work starts."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.model.state import BN_STATS_MODES


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


_ABSENT = object()
# Keys whose null means something (use the default): every other checked key must hold a value.
NULLABLE = {"data.test_batch_size", "ckpt_path"}


def _get(cfg: DictConfig, key: str) -> Any:
    """The value at `key`; None when the key is absent (not every data source has every key)."""
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if value is _ABSENT:
        return None
    if value is None and key not in NULLABLE:
        raise ConfigError(f"{key} must be set, got null")
    return value


def _number(cfg: DictConfig, key: str, integer: bool = False) -> float | int | None:
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
    for key in ("model.update_state", "test", "data.resize", "data.grayscale"):
        _boolean(cfg, key)
    bn_stats = _get(cfg, "model.bn_stats")
    if bn_stats is not None and bn_stats not in BN_STATS_MODES:
        raise ConfigError(f"model.bn_stats={bn_stats!r} must be 'running' or 'population'")
    _require(cfg, "data.batch_size", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.test_batch_size", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.num_train_per_class", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.num_test_per_class", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "data.seed", lambda v: v >= 0, "0 or more", integer=True)
    _require(cfg, "data.split_seed", lambda v: v >= 0, "0 or more", integer=True)
    _require(cfg, "seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)", integer=True)
    _require(cfg, "optimizer.lr", lambda v: v >= 0, "0 or more")
    _require(cfg, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    _require(cfg, "optimizer.weight_decay", lambda v: v >= 0, "0 or more")
    _require(cfg, "trainer.max_epochs", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "trainer.log_every_n_steps", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "callbacks.bn_state_monitor.check_after", lambda v: v >= 1, "at least 1", True)
    _require(cfg, "model.num_filters", lambda v: v >= 1, "at least 1", integer=True)
    _require(cfg, "model.bn_decay", lambda v: 0 < v <= 1, "in (0, 1]")
    _require(cfg, "model.bn_epsilon", lambda v: v > 0, "above 0")
    ckpt = _get(cfg, "ckpt_path")
    if ckpt is not None and not Path(str(ckpt)).is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such checkpoint file")
    _check_accelerator(cfg)


def _check_accelerator(cfg: DictConfig) -> None:
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu) but PyTorch sees no CUDA GPU on this "
            f"machine (torch {torch.__version__}); use trainer=cpu or trainer=auto"
        )
    devices = _get(cfg, "trainer.devices")
    if devices is not None and devices not in (1, "1", [0]):
        # Each process would carry its own batch-norm state and the checkpoint would hold
        # rank 0's: not the state this project promises to keep right.
        raise ConfigError(
            f"trainer.devices={devices}: only trainer.devices=1 is supported (several processes "
            "would each carry their own batch-norm state)"
        )
    if _get(cfg, "trainer.num_nodes") not in (None, 1):
        raise ConfigError("trainer.num_nodes must be 1: multi-node training is not supported yet")


def one_line(err: BaseException) -> str:
    """Hydra's composition errors span many lines; keep what names the key or option."""
    text = str(err).split("Config search path:")[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        first = str(cause).strip().splitlines()[0]
        if first not in lines:
            lines.append(first)
    return "; ".join(ln.rstrip(".") for ln in lines).replace(":;", ":")


def _compositions(overrides: list[str]) -> list[list[str]]:
    """The override lists to try: every value of every sweep appears in at least one of them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parsed = OverridesParser.create().parse_overrides(overrides)
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++", OverrideType.DEL: "~"}

    def line(o: Any, value: str) -> str:
        return f"{prefix.get(o.type, '')}{o.get_key_element()}={value}"

    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else None for o in parsed]
    base = [line(o, v[0]) if v else o.input_line for o, v in zip(parsed, values)]
    runs = [base]
    for i, (o, vs) in enumerate(zip(parsed, values)):
        for v in (vs or [])[1:]:
            runs.append([*base[:i], line(o, v), *base[i + 1 :]])
    return runs


def preflight(argv: list[str], config_dir: str, config_name: str) -> None:
    """Compose the config the CLI will run (each sweep value too) and check it.

    Raises ConfigError with one line for an unknown group, option or key, or a bad value, so the
    user sees that line instead of Hydra's multi-line report, and no run directory is made.
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
            for overrides in runs:
                try:
                    cfg = compose(args.config_name or config_name, overrides, True)
                except (HydraException, ValueError) as err:  # ValueError: e.g. callbacks=null
                    raise ConfigError(one_line(err)) from err
                check_config(cfg)
    finally:
        GlobalHydra.instance().clear()
