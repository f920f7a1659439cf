"""Where digit images come from: each source returns a (train, test) pair of DigitArrays.

`synthetic` is the built-in generator; `folder`, `mat` and `mnist` read digit data from disk. Every
reader raises DataError with one line naming the file or folder at fault, and checks everything it
read before it writes any cache, so a failed load leaves the caches as they were.

`data=NAME` picks `SOURCES[NAME]`; each source lives in its own file of this package:

    builtin.py        data=synthetic  `synthetic`: draws of src/data/synthetic.py's generator
    image_folders.py  data=folder     `folder`: class folders of image files; what
                                      src.predict reads its images with; `split_class`
    mat_files.py      data=mat        `mat`: MATLAB .mat files (v4-v7)
    idx.py            data=mnist      `mnist`: MNIST and its family (data.dataset) as IDX files;
                                      `read_idx`; `DATASETS`, their files, checksums and mirrors
    download.py       data.download=true: a file fetched from the mirrors in turn, MD5-checked,
                      renamed into place only when whole
    common.py         what the readers from disk share: the config's options and the train/test
                      cache that writes nothing unless both sets built cleanly

Code elsewhere imports the loaders from `src.data.sources`, re-exported here. The files are not
named after the loaders, so that `src.data.sources.folder` (and `mat`) is always the loader
function, never a module that an import of the file would put in its place.
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
