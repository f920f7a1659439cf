"""data=mnist: the four MNIST IDX files (plain or .gz); nothing is downloaded."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES, DigitArrays
from src.data.sources.common import _existing, _path_option
from src.errors import DataError, first_line

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # magic numbers: unsigned bytes, 3 and 1 dimensions


def _mnist_file(root: Path, stem: str) -> Path:
    """The file for `stem` in root (or torchvision's root/MNIST/raw), plain before gzipped."""
    dotted = stem.replace("-idx", ".idx")  # train-images.idx3-ubyte, a common re-packaging
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem, dotted):
            for suffix in ("", ".gz"):
                if (folder / (name + suffix)).is_file():
                    return folder / (name + suffix)
    raise DataError(f"{root}: no MNIST file {stem} (nor {stem}.gz, {dotted} or {dotted}.gz)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in one IDX file (plain or gzipped), checked against its header."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # EOFError: a cut-off .gz
        raise DataError(f"{path}: cannot be read ({first_line(err)})") from err
    what = "image" if magic == _IDX_IMAGES else "label"
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(
            f"{path}: is not an IDX {what} file (magic number {found}, expected {magic})"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    shape = "x".join(map(str, dims))
    if len(data) - header < size:
        raise DataError(
            f"{path}: is truncated: its header promises a {shape} array ({size} bytes) but only "
            f"{len(data) - header} bytes follow"
        )
    if len(data) - header > size:
        raise DataError(f"{path}: has {len(data) - header - size} bytes after its {shape} array")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims)


def _read_mnist(root: Path, split: str) -> DigitArrays:
    image_path, label_path = (_mnist_file(root, stem) for stem in MNIST_FILES[split])
    raw = read_idx(image_path, _IDX_IMAGES)
    if raw.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        size = "x".join(map(str, raw.shape[1:]))
        raise DataError(f"{image_path}: images are {size} pixels, expected 28x28")
    labels = read_idx(label_path, _IDX_LABELS).astype(np.int64)
    if labels.shape[0] != raw.shape[0]:
        raise DataError(
            f"{label_path}: holds {labels.shape[0]} labels but {image_path.name} holds "
            f"{raw.shape[0]} images; the counts must match"
        )
    out = labels >= NUM_CLASSES
    if out.any():
        raise DataError(
            f"{label_path}: {int(out.sum())} label(s) outside 0-9 (e.g. {int(labels[out][0])})"
        )
    images = raw[:, None].astype(np.float32) / np.float32(255)
    return DigitArrays(images, labels).check(str(image_path))


def mnist(
    cache_dir: str | Path | None, root: str | Path | None = None
) -> tuple[DigitArrays, DigitArrays]:
    """The four MNIST IDX files (plain or .gz) in `root`; nothing is downloaded."""
    # Not cached: decompressing and converting all 70,000 images takes about half a second.
    path = _existing(_path_option("data.root", root), "data.root", want_dir=True)
    return _read_mnist(path, "train"), _read_mnist(path, "test")
