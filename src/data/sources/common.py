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


def _existing(path: Path, key: str, want_dir: bool) -> Path:
    if not path.exists():
        raise DataError(f"{path}: no such {'folder' if want_dir else 'file'} ({key})")
    if want_dir and not path.is_dir():
        raise DataError(f"{path}: is a file, expected a folder ({key})")
    if not want_dir and path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file ({key})")
    return path
