"""What the readers of digit data from disk share: the config's options (paths, true/false
flags, files and folders that must exist) and the train/test cache that writes nothing until
both sets have been read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.data.arrays import DigitArrays
from src.data.cache import cache_path, load_cached, save_cached
from src.errors import DataError

SPLITS = ("train", "test")


# ---------------------------------------------------------------------------------------------
# Options as they come from the config


def _path_option(key: str, value: Any) -> Path:
    """A path from the config; DataError naming the key when it is unset."""
    if value is None or not str(value).strip():
        raise DataError(f"{key} is not set: add {key}=PATH to the command line")
    return Path(os.path.expanduser(str(value)))


def _bool_option(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DataError(f"{key} must be true or false, got {value!r}")
    return value


def _existing(path: Path, key: str, want_dir: bool) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such {'folder' if want_dir else 'file'} ({key})")
    if want_dir and not path.is_dir():
        raise DataError(f"{path}: is a file, expected a folder ({key})")
    if not want_dir and path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file ({key})")
    return path


def _cached_pair(
    cache_dir: str | Path | None,
    name: str,
    keys: dict[str, dict],
    builds: dict[str, Callable[[], DigitArrays]],
) -> tuple[DigitArrays, DigitArrays]:
    """Like `cached` for a train/test pair, but writes nothing unless both sets built cleanly."""
    if cache_dir is None:
        return builds["train"](), builds["test"]()
    paths = {s: cache_path(Path(cache_dir), f"{name}-{s}", keys[s]) for s in SPLITS}
    found = {s: load_cached(paths[s]) for s in SPLITS}
    sets = {s: found[s] if found[s] is not None else builds[s]() for s in SPLITS}
    for s in SPLITS:
        if found[s] is None:
            save_cached(paths[s], sets[s])
    return sets["train"], sets["test"]
