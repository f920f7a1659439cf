"""Where digit images come from: each source returns a (train, test) pair of DigitArrays.

`data=NAME` picks `SOURCES[NAME]`, each loader in its own file of this package (its docstring
says which). Every reader raises DataError with one line naming the file or folder at fault, and
checks everything it read before it writes any cache, so a failed load leaves the caches as they
were. The files are not named after the loaders, so that `src.data.sources.folder` (and `mat`) is
always the loader function, never a module that an import of the file would put in its place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.data.arrays import DigitArrays
from src.data.sources.builtin import synthetic
from src.data.sources.download import mirrors_problem
from src.data.sources.idx import dataset_problem, mnist
from src.data.sources.image_folders import decode_image, folder, split_class
from src.data.sources.mat_files import mat

__all__ = [
    "SOURCES",
    "dataset_problem",
    "decode_image",
    "folder",
    "load_source",
    "mat",
    "mirrors_problem",
    "mnist",
    "split_class",
    "synthetic",
]

SOURCES = {"synthetic": synthetic, "folder": folder, "mat": mat, "mnist": mnist}


def load_source(
    name: str, cache_dir: str | Path | None, options: dict[str, Any]
) -> tuple[DigitArrays, DigitArrays]:
    """Load the named source with its options (a name the config's check knows)."""
    return SOURCES[name](cache_dir, **options)
