"""Where digit images come from: each source returns a (train, test) pair of DigitArrays, the
training set None when its keyword `splits` asks for the test set only.

`data=NAME` picks `SOURCES[NAME]`, each loader in its own file of this package (its docstring
says which). Every reader raises DataError with one line naming the file or folder at fault, and
checks everything it read before it writes any cache, so a failed load leaves the caches as they
were. The files are not named after the loaders, so that `src.data.sources.folder` (and `mat`) is
always the loader function, never a module that an import of the file would put in its place.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from src.data.arrays import DigitArrays
from src.data.sources.builtin import synthetic
from src.data.sources.common import SPLITS, existing_option
from src.data.sources.download import mirrors_problem
from src.data.sources.idx import dataset_problem, idx_root, mnist
from src.data.sources.image_folders import decode_image, folder, split_class
from src.data.sources.mat_files import mat

__all__ = [
    "SOURCES",
    "check_paths",
    "dataset_problem",
    "decode_image",
    "folder",
    "load_source",
    "mat",
    "mirrors_problem",
    "mnist",
    "source_options",
    "split_class",
    "synthetic",
]

SOURCES = {"synthetic": synthetic, "folder": folder, "mat": mat, "mnist": mnist}


def load_source(
    name: str,
    cache_dir: str | Path | None,
    options: dict[str, Any],
    splits: tuple[str, ...] = SPLITS,
) -> tuple[DigitArrays | None, DigitArrays]:
    """Load the named source with its options (a name the config's check knows): the test set,
    and the training set if `splits` holds "train" (else None)."""
    return SOURCES[name](cache_dir, **options, splits=splits)


def source_options(name: str) -> list[inspect.Parameter]:
    """What `data=NAME` takes from the config: its loader's parameters but `cache_dir` and
    `splits`, which the data module passes itself."""
    params = inspect.signature(SOURCES[name], eval_str=True).parameters.values()
    return [p for p in params if p.name not in ("cache_dir", "splits")]


def check_paths(name: str, options: dict[str, Any]) -> None:
    """The files and folders the named source reads are there (DataError naming the key): checked
    with the config, so that a wrong path is refused before Hydra makes a run folder. An option
    not given (predict's probe of the image settings) is left to the loader."""
    given = {k: v for k, v in options.items() if v is not None}
    if name == "mnist" and "root" in given:
        idx_root(given["root"], given.get("download") is True)
    for option, want_dir in _PATHS.get(name, {}).items():
        if option in given:
            existing_option(f"data.{option}", given[option], want_dir)


# The options of data=folder and data=mat that name a folder (True) or a file (False).
_PATHS = {"folder": {"root": True}, "mat": {"train_file": False, "test_file": False}}
