"""Hydra's composition errors, which span many lines and advise `+KEY` for any unknown key,
worded as one line that names the key and what the user most likely meant: a typo's nearest
key, MATLAB's names for the example's settings, a key set where its node is interpolated from."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.config import CONFIG_DIR
from src.config.schema import network_is_the_checkpoints
from src.config.targets import check_targets
from src.errors import ConfigError, one_line


def worded(err: Exception, overrides: list[str], composed: Callable, typed: list[str]) -> str:
    """The line for Hydra's error `err` on composing `overrides` (`composed` composes others;
    `typed`: the command line's overrides, sweeps not yet expanded)."""
    return _unknown_key(_appended(one_line(err)), overrides, composed, typed)


def _appended(line: str) -> str:
    """Hydra's error for `+key=value` on a key that holds a value of Hydra's run (its check for
    an existing item resolves it, too early) worded as for any other existing key."""
    found = re.match(r"Error merging override \+([^+=]+)=(.*?); .*HydraConfig was not set", line)
    if not found:
        return line
    key, value = found.groups()
    said = f"+{key}={value}: {key} is already set (by the run folder), so it cannot be added"
    if key in ("paths.output_dir", "trainer.default_root_dir"):  # the run folder itself
        return f"{said}; the run folder is Hydra's: set hydra.run.dir={value} instead"
    return f"{said}; remove the +: {key}={value}"


# The example's own names, which a MATLAB user types first (docs/matlab-mapping.md).
MATLAB_NAMES = {"numEpochs": "trainer.max_epochs", "miniBatchSize": "data.batch_size",
                "learnRate": "optimizer.lr", "momentum": "optimizer.momentum",
                "executionEnvironment": "trainer"}  # fmt: skip


def _ours(name: str, value: str) -> str:
    """The value a MATLAB name's setting takes here: executionEnvironment's are trainer options."""
    if name != "executionEnvironment":
        return value
    ours = [{"multi-gpu": "ddp", "parallel": "ddp"}.get(v, v) for v in value.split(",")]  # a sweep
    options = sorted(p.stem for p in (Path(CONFIG_DIR) / "trainer").glob("*.yaml"))
    known = all(v in options for v in ours)
    return ",".join(ours) if known else f"NAME (one of: {', '.join(options)})"


def _unknown_key(line: str, overrides: list[str], composed: Callable, typed: list[str]) -> str:
    """Hydra's error for `key=value` on a key the config does not have, which suggests adding
    it, with the key it most likely means (a typo is the usual cause). `typed`: the command
    line's overrides, sweeps not yet expanded."""
    group = re.match(r"Could not override '([^']+)'\. No match in the defaults list", line)
    if group:  # a group the config does not choose (trainer=gpu on src.predict)
        others = [o for o in overrides if o.split("=")[0] != group[1]]
        cfg = composed(others) if others != overrides else None
        if cfg is not None and "train" not in cfg:  # a command that reads a checkpoint
            typed = next(o for o in overrides if o.split("=")[0] == group[1])
            return f"{typed}: {cfg.task_name} has no {group[1]} group: it would not read it"
        return line
    found = re.match(r"Could not override '([^']+)'; To append to your config use \+(\S+?);", line)
    if not found:
        return line
    key, added = found.groups()  # the line's end, a value's too, may have lost a final "."
    added = next((o for o in overrides if o.split("=")[0] == key), added)
    value = next((o.split("=", 1)[1] for o in typed if o.split("=")[0] == key), "...")  # a sweep's
    searched = key.removeprefix("hydra.sweeper.params.")
    if searched != key:  # the search space's keys hold a dot (optimizer.lr): out of a path's reach
        return (
            f"{key}: the search space (hydra.sweeper.params) cannot be changed key by key; "
            f"give the key its range itself, which replaces the config's: '{searched}={value}'"
        )
    # The example's names come together (numEpochs=2 miniBatchSize=64): all said at once.
    matlab = {k: v for k, _, v in (o.partition("=") for o in typed) if k in MATLAB_NAMES}
    try:  # the config without this override (nor those names): the keys it does have
        cfg = composed([o for o in overrides if o.split("=")[0] not in (key, *matlab)])
    except ConfigError as err:  # another override of the line is wrong too: its line
        return str(err)
    if key in matlab and "train" in cfg:  # not a key to add: nothing would read it
        ours = " ".join(f"{MATLAB_NAMES[k]}={_ours(k, v)}" for k, v in matlab.items())
        if len(matlab) > 1:
            return (
                f"{' '.join(f'{k}={v}' for k, v in matlab.items())}: MATLAB's names: write {ours}"
            )
        return f"{key}={value}: {key} is MATLAB's name: write {ours}"
    parts = key.split(".")
    raw: Any = OmegaConf.to_container(cfg, resolve=False)
    for i, part in enumerate(parts[:-1]):  # model.optimizer.lr, where model.optimizer: ${optimizer}
        raw = raw.get(part) if isinstance(raw, dict) else None
        source = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
        if source and isinstance(_node(cfg, source[1]), DictConfig):
            there = ".".join([source[1], *parts[i + 1 :]])
            return f"{added}: {'.'.join(parts[: i + 1])} is {raw}: write {there}={value}"
    depth = len(parts) - 1  # the deepest part of the key the config has
    while depth and not isinstance(_node(cfg, ".".join(parts[:depth])), DictConfig):
        depth -= 1
    parent, name = ".".join(parts[:depth]), parts[depth]
    if depth < len(parts) - 1 and name in _node(cfg, parent):  # data.shuffle_seed.x
        return f"{added}: {'.'.join(parts[: depth + 1])} is a value, not a node with keys"
    close = difflib.get_close_matches(name, [str(k) for k in OmegaConf.select(cfg, parent)], n=1)
    said = f" (did you mean {'.'.join([*parts[:depth], close[0]])}?)" if close else ""
    where = parent or "the config"
    if "train" not in cfg and parent == "model":  # a command that reads a checkpoint
        return f"{added}: {network_is_the_checkpoints(cfg.task_name)}"
    if "train" not in cfg and parts[0] != "data":  # +data.KEY edits the checkpoint's data
        return f"{added}: {where} has no key {name!r}{said}: {cfg.task_name} would not read it"
    if "train" not in cfg and isinstance(cfg.get("data"), DictConfig):  # predict's own few keys
        allowed = " and ".join(f"data.{k}" for k in cfg.data)
        return f"{added}: {cfg.task_name} takes only {allowed}{said}"
    # No typo: an option of another class, maybe. (A command that reads a checkpoint takes
    # +data.KEY onto the checkpoint's data, not the data group's class: not there.)
    if not close and depth == len(parts) - 1 and "train" in cfg:
        try:  # added, the key meets the class its group builds, which may not take it either
            plus = composed([*(o for o in overrides if o.split("=")[0] != key), f"+{added}"])
            settings = OmegaConf.to_container(plus)
            check_targets(plus, {k: v for k, v in settings.items() if k != "hydra"})
        except Exception as err:  # anything else: the + is still the way to add it
            if isinstance(err, ConfigError) and str(err).startswith(f"{key}: "):
                return f"{added}: {where} has no key {name!r}, and {str(err)[len(key) + 2 :]}"
    return f"{added}: {where} has no key {name!r}{said}; a new key is added with +{added}"


def _node(cfg: DictConfig, key: str) -> Any:
    """The value at `key`; None where it cannot be resolved yet (`${hydra:...}` before a run)."""
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
