"""data=mnist: MNIST and its family (Fashion-MNIST, KMNIST, EMNIST digits, QMNIST) from their
IDX files, plain or .gz, fetched on demand (data.download=true) in torchvision's layout.

`DATASETS` is the family's table: file names, torchvision's folder (ROOT/<folder>/raw), the
files each data set's mirrors serve with torchvision's MD5s, and those mirrors. It is the one
place the checksums live: tests that serve their own small files replace an entry with
`monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], resources=...))`;
users cannot override a checksum, only the mirrors (data.mirrors).
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.data.arrays import IMAGE_SIZE, DigitArrays
from src.data.sources.common import SPLITS, _existing, _path_option
from src.data.sources.download import fetch, fetch_archive, gunzip
from src.errors import DataError, first_line

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # magic numbers: unsigned bytes, 3 and 1 dimensions
_IDX_INT_TABLE = 3074  # QMNIST's labels: big-endian int32, 2 dimensions (N x 8)

# The element type an IDX magic number's third byte names (Lush's idx-io): numpy's big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Resource:
    """A file a data set's mirrors serve: its name there (appended to each mirror's base URL),
    its MD5, and for a zip archive the gzipped members to unpack from it."""

    name: str
    md5: str
    members: tuple[str, ...] = ()

    @property
    def gives(self) -> tuple[str, ...]:
        """The plain files it yields (torchvision unpacks every .gz beside it, and so do we)."""
        packed = self.members or (self.name,)
        return tuple(Path(m).name.removesuffix(".gz") for m in packed)


@dataclass(frozen=True)
class IdxDataset:
    """One data set of the family: what its files are called and where they come from."""

    title: str  # in messages: "no MNIST file ..."
    folder: str  # torchvision's class name: files go to ROOT/<folder>/raw
    files: dict[str, tuple[str, str]]  # split -> (images, labels), without .gz
    resources: tuple[Resource, ...]
    mirrors: tuple[str, ...]  # base URLs, tried in order
    labels_magic: int = _IDX_LABELS


def _gz(files: dict[str, tuple[str, str]], *md5s: str) -> tuple[Resource, ...]:
    """One gzipped resource per file, in the order train images, train labels, test ..."""
    names = [name for split in SPLITS for name in files[split]]
    return tuple(Resource(f"{name}.gz", md5) for name, md5 in zip(names, md5s, strict=True))


_EMNIST_FILES = {
    split: (f"emnist-digits-{split}-images-idx3-ubyte", f"emnist-digits-{split}-labels-idx1-ubyte")
    for split in SPLITS
}
_QMNIST_FILES = {
    split: (f"qmnist-{split}-images-idx3-ubyte", f"qmnist-{split}-labels-idx2-int")
    for split in SPLITS
}

# torchvision's datasets.MNIST, FashionMNIST, KMNIST, EMNIST (split="digits") and QMNIST
# (what="train"/"test"): the same file names, MD5s and mirrors.
DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        "MNIST",
        "MNIST",
        MNIST_FILES,
        _gz(MNIST_FILES, "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion_mnist": IdxDataset(
        "Fashion-MNIST",
        "FashionMNIST",
        MNIST_FILES,
        _gz(MNIST_FILES, "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "kmnist": IdxDataset(
        "KMNIST",
        "KMNIST",
        MNIST_FILES,
        _gz(MNIST_FILES, "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ),
    # One archive (about 560 MB) of every EMNIST split; only the digits' four members are unpacked.
    "emnist_digits": IdxDataset(
        "EMNIST digits",
        "EMNIST",
        _EMNIST_FILES,
        (
            Resource(
                "gzip.zip",
                "58c8d27c78d21e728a6bc7b3cc06412e",
                tuple(f"gzip/{name}.gz" for s in SPLITS for name in _EMNIST_FILES[s]),
            ),
        ),
        ("https://biometrics.nist.gov/cs_links/EMNIST/",
         "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/"),
    ),
    # The test set is QMNIST's whole 60,000 (torchvision's what="test"); labels: column 0.
    "qmnist": IdxDataset(
        "QMNIST",
        "QMNIST",
        _QMNIST_FILES,
        _gz(_QMNIST_FILES, "ed72d4157d28c017586c42bc6afe6370", "0058f8dd561b90ffdd0f734c6a30e5e4",
            "1394631089c404de565df7b7aeaf9412", "5b5b05890a5e13444e108efe57b788aa"),
        ("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
        labels_magic=_IDX_INT_TABLE,
    ),
}  # fmt: skip


def dataset_problem(name: Any) -> str | None:
    """Why `name` is not a `data.dataset` (None when it is one)."""
    if isinstance(name, str) and name in DATASETS:
        return None
    return f"data.dataset={name!r} is not one of {', '.join(DATASETS)}"


def _find(root: Path, spec: IdxDataset, stem: str) -> Path | None:
    """The file for `stem`: in torchvision's ROOT/<folder>/raw (where downloads go), then in
    root itself; plain before gzipped; also the dotted re-packaging (train-images.idx3-ubyte)."""
    dotted = stem.replace("-idx", ".idx")
    for folder in (root / spec.folder / "raw", root):
        for name in (stem, dotted):
            for suffix in ("", ".gz"):
                if (folder / (name + suffix)).is_file():
                    return folder / (name + suffix)
    return None


def _missing(root: Path, spec: IdxDataset, stem: str) -> DataError:
    dotted = stem.replace("-idx", ".idx")
    return DataError(
        f"{root}: no {spec.title} file {stem} (nor {stem}.gz, {dotted} or {dotted}.gz, there or "
        f"in {spec.folder}/raw); add data.download=true to fetch it"
    )


def _download_missing(
    root: Path, spec: IdxDataset, mirrors: list[str] | None, splits: tuple[str, ...] = SPLITS
) -> None:
    """Fetch the files of `spec`'s `splits` not found under root into ROOT/<folder>/raw; nothing
    if all are there, however they got there (an earlier download, torchvision, a copy by hand)."""
    stems = [stem for split in splits for stem in spec.files[split]]
    missing = {stem for stem in stems if _find(root, spec, stem) is None}
    raw = root / spec.folder / "raw"
    for resource in spec.resources:
        wanted = [stem for stem in resource.gives if stem in missing]
        if not wanted:
            continue
        urls = mirrors or list(spec.mirrors)
        if resource.members:
            members = [m for m, stem in zip(resource.members, resource.gives) if stem in wanted]
            fetch_archive(resource.name, resource.md5, urls, raw, members)
        else:
            packed = fetch(resource.name, resource.md5, urls, raw / resource.name)
            with packed.open("rb") as source:
                gunzip(source, raw / wanted[0], str(packed))


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array in one IDX file (plain or gzipped), of the type its magic number names (uint8
    for MNIST's), checked against its header."""
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # EOFError: a cut-off .gz
        raise DataError(f"{path}: cannot be read ({first_line(err)})") from err
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        what = "image" if magic == _IDX_IMAGES else "label"
        said = f"{len(data)} bytes, no magic number" if found is None else f"magic number {found}"
        raise DataError(f"{path}: is not an IDX {what} file ({said}, expected {magic})")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    count = int(np.prod(dims, dtype=np.int64))
    size = count * dtype.itemsize
    shape = "x".join(map(str, dims))
    if len(data) - header < size:
        raise DataError(
            f"{path}: is truncated: its header promises a {shape} array ({size} bytes) but only "
            f"{len(data) - header} bytes follow"
        )
    if len(data) - header > size:
        raise DataError(f"{path}: has {len(data) - header - size} bytes after its {shape} array")
    return np.frombuffer(data, dtype, count=count, offset=header).reshape(dims)


def _read_split(root: Path, spec: IdxDataset, split: str) -> DigitArrays:
    found = [_find(root, spec, stem) for stem in spec.files[split]]
    for stem, path in zip(spec.files[split], found):
        if path is None:
            raise _missing(root, spec, stem)
    image_path, label_path = found
    raw = read_idx(image_path, _IDX_IMAGES)
    if raw.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        size = "x".join(map(str, raw.shape[1:]))
        raise DataError(f"{image_path}: images are {size} pixels, expected 28x28")
    labels = read_idx(label_path, spec.labels_magic)
    if labels.ndim == 2:  # QMNIST: one row of 8 numbers an image, the class first (as torchvision)
        labels = labels[:, 0]
    images = raw[:, None].astype(np.float32) / np.float32(255)
    # Named by the label file: 28x28 bytes are always good images, so the labels are at fault
    # when the check fails (out of 0-9, or not one an image).
    origin = f"{label_path} (with {image_path.name})"
    return DigitArrays(images, labels.astype(np.int64)).check(origin)


def idx_root(root: str | Path | None, download: bool) -> Path:
    """data.root: set, and there unless download=true is to make it (DataError naming it)."""
    path = _path_option("data.root", root)
    if not download and not path.exists():
        raise DataError(f"{path}: no such folder (data.root); add data.download=true to fetch it")
    return path if download and not path.exists() else _existing(path, "data.root", True)


def mnist(
    cache_dir: str | Path | None,
    root: str | Path | None = None,
    dataset: str = "mnist",
    download: bool = False,
    mirrors: list[str] | None = None,
    *,
    splits: tuple[str, ...] = SPLITS,
) -> tuple[DigitArrays | None, DigitArrays]:
    """The train and test sets of `dataset` (a key of DATASETS) from their IDX files in `root`.

    download=true first fetches any file not found from `mirrors` (None: the data set's own),
    each checked against its MD5; the files are read the same way however they got there.
    """
    # Not cached: decompressing and converting all 70,000 images takes about half a second.
    # `dataset` and `mirrors` are checked with the config (dataset_problem, mirrors_problem).
    spec = DATASETS[dataset]
    path = idx_root(root, download)
    if download:
        urls = None if mirrors is None else [str(m) for m in mirrors]
        _download_missing(path, spec, urls, splits)
    path = _existing(path, "data.root", want_dir=True)
    train = _read_split(path, spec, "train") if "train" in splits else None
    return train, _read_split(path, spec, "test")
