"""What the readers of digit data from disk share: the config's paths, which must be set and,
for files and folders, exist."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from src.errors import DataError

SPLITS = ("train", "test")


def _path_option(key: str, value: Any) -> Path:
    """A path from the config; DataError naming the key when it is unset."""
    if value is None or not str(value).strip():
        raise DataError(f"{key} is not set: add {key}=PATH to the command line")
    return Path(os.path.expanduser(str(value)))


def existing_option(key: str, value: Any, want_dir: bool) -> Path:
    """The file or folder a path option names: set, and there (DataError naming the key)."""
    return _existing(_path_option(key, value), key, want_dir)


def _existing(path: Path, key: str, want_dir: bool) -> Path:
    want, other = ("folder", "file") if want_dir else ("file", "folder")
    if not path.exists():
        raise DataError(f"{path}: no such {want} ({key})")
    if path.is_dir() != want_dir:
        raise DataError(f"{path}: is a {other}, expected a {want} ({key})")
    return path
