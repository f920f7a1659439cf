"""Where digit images come from: each source returns a (train, test) pair of DigitArrays.

`synthetic` is the built-in generator; `folder`, `mat` and `mnist` read digit data from disk. Every
reader raises DataError with one line naming the file or folder at fault, and checks everything it
read before it writes any cache, so a failed load leaves the caches as they were.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES, DataError, DigitArrays
from src.data.cache import cache_path, cached, load_cached, save_cached

log = logging.getLogger(__name__)

# Part of the folder source's cache key: bump it whenever the same files would decode differently.
FOLDER_READER_VERSION = 1

SPLITS = ("train", "test")


def synthetic(
    cache_dir: str | Path | None,
    seed: int = 0,
    num_train_per_class: int = 500,
    num_test_per_class: int = 500,
) -> tuple[DigitArrays, DigitArrays]:
    """The built-in generator: independent train and test draws that depend only on `seed`."""
    from src.data import synthetic as gen

    sets = []
    for split, stream, n in (("train", 0, num_train_per_class), ("test", 1, num_test_per_class)):
        key = {"split": split, "seed": seed, "num_per_class": n, **gen.generator_settings()}
        build = lambda n=n, stream=stream: gen.generate_digits(n, [seed, stream])  # noqa: E731
        sets.append(cached(cache_dir, f"synthetic-{split}", key, build).check(f"synthetic {split}"))
    return sets[0], sets[1]


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


def _reason(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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
            try:
                save_cached(paths[s], sets[s])
            except OSError as err:  # a read-only or full disk costs time, not the run
                log.warning(
                    "Could not write data cache %s (%s); continuing without it.", paths[s], err
                )
    return sets["train"], sets["test"]


# ---------------------------------------------------------------------------------------------
# data=folder: MATLAB's DigitDataset layout


# Files that operating systems and file managers drop into folders; never a digit image.
_JUNK_FILES = {"thumbs.db", "desktop.ini", "__macosx"}


def is_junk(name: str) -> bool:
    # Hidden names cover .DS_Store, macOS's ._* resource forks and .ipynb_checkpoints.
    return name.startswith(".") or name.lower() in _JUNK_FILES


def split_class(names: Sequence[str], label: int, split_seed: int) -> tuple[list[int], list[int]]:
    """Indices of one class's files for training and for testing, in the README's seeded rule.

    The files are ordered by the SHA-256 hex digest of "<split_seed>/<label>/<file name>"; the
    first ceil(n/2) train, the rest test. Hashes rather than a random generator, so the split is
    the same on every platform and numpy version, and can be recomputed by hand.
    """

    def rank(i: int) -> str:
        return hashlib.sha256(f"{split_seed}/{label}/{names[i]}".encode()).hexdigest()

    order = sorted(range(len(names)), key=rank)
    half = (len(names) + 1) // 2
    return sorted(order[:half]), sorted(order[half:])


def _class_folders(folder: Path) -> dict[int, list[os.DirEntry]]:
    """Each class folder's image files (name order), by label; DataError for a bad tree."""
    classes: dict[int, list[os.DirEntry]] = {}
    ignored: list[str] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if is_junk(entry.name):
            continue
        if not entry.is_dir():
            ignored.append(entry.name)
            continue
        if entry.name not in {str(c) for c in range(NUM_CLASSES)}:
            raise DataError(
                f"{entry.path}: folder name {entry.name!r} is not a digit label 0-9; each "
                f"sub-folder of {folder} must be named by the class of the images inside"
            )
        with os.scandir(entry.path) as it:
            files = sorted((f for f in it if not is_junk(f.name)), key=lambda f: f.name)
        for f in files:
            if f.is_dir():
                raise DataError(
                    f"{f.path}: a folder inside class folder {entry.name}; class folders hold "
                    f"image files only"
                )
        if not files:
            raise DataError(f"{entry.path}: class folder {entry.name} holds no image files")
        classes[int(entry.name)] = files
    if not classes:
        raise DataError(f"{folder}: holds no class folders named 0-9 (see the README's layouts)")
    if ignored:
        log.warning(
            "Ignored %d file(s) beside the class folders in %s (e.g. %s).",
            len(ignored),
            folder,
            ignored[0],
        )
    absent = sorted(set(range(NUM_CLASSES)) - classes.keys())
    if absent:
        log.warning("%s has no images of class(es) %s.", folder, ", ".join(map(str, absent)))
    return dict(sorted(classes.items()))


def _pixels(im: Any, path: str, grayscale: bool) -> np.ndarray:
    """One decoded Pillow image as float32 gray values in [0, 1] (its own size)."""
    mode = im.mode
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))
        # A palette of grays is one channel, however it is stored.
        if grayscale or ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        raise DataError(
            f"{path}: is a colour (palette) image; add data.grayscale=true to convert it to gray"
        )
    if mode in ("L", "LA", "La"):  # like MATLAB's imread, an alpha channel is ignored
        return np.asarray(im.getchannel(0), dtype=np.float32) / 255.0
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        # 32-bit integers are taken as 16-bit data, floats as they are; check the result.
        a = np.asarray(im, dtype=np.float32) / (65535.0 if mode == "I" else 1.0)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: has NaN or infinite pixel values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: pixel values span [{lo:g}, {hi:g}], expected [0, 1]")
        return a
    if not grayscale:
        raise DataError(
            f"{path}: has colour channels ({mode}), expected grayscale; add data.grayscale=true "
            f"to convert colour images to gray"
        )
    # Pillow's weights are rgb2gray's (ITU-R BT.601); an alpha channel is ignored.
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def decode_image(path: str, resize: bool, grayscale: bool) -> np.ndarray:
    """One image file as a float32 28x28 array in [0, 1]; DataError naming the file otherwise.

    Also what `python -m src.predict` reads its images with, so both refuse and convert alike."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            a = _pixels(im, path, grayscale)
    except DataError:
        raise
    except Exception as err:  # Pillow raises many types for unreadable or truncated files
        raise DataError(f"{path}: cannot be read as an image ({_reason(err)})") from err
    if a.shape != (IMAGE_SIZE, IMAGE_SIZE):
        if not resize:
            raise DataError(
                f"{path}: image is {a.shape[0]}x{a.shape[1]} pixels (height x width), expected "
                f"28x28; add data.resize=true to resize images"
            )
        # Bicubic with antialiasing when shrinking, like MATLAB's imresize.
        small = Image.fromarray(a).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        a = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
    return a


def _decode_set(
    files: Sequence[tuple[str, int]], origin: str, resize: bool, grayscale: bool
) -> DigitArrays:
    """(path, label) pairs decoded into one checked DigitArrays."""
    images = np.empty((len(files), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, (path, _) in enumerate(files):
        images[i, 0] = decode_image(path, resize, grayscale)
    labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
    return DigitArrays(images, labels).check(origin)


def _listing_digest(classes: dict[int, list[os.DirEntry]], root: Path) -> str:
    """Changes whenever a file is added, removed, renamed or rewritten (size or mtime)."""
    h = hashlib.sha256()
    for files in classes.values():
        for f in files:
            st = f.stat()
            h.update(f"{os.path.relpath(f.path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def folder(
    cache_dir: str | Path | None,
    root: str | Path | None = None,
    resize: bool = False,
    grayscale: bool = False,
    split_seed: int = 0,
) -> tuple[DigitArrays, DigitArrays]:
    """Images in class folders: ROOT/{train,test}/<label>/*, or one ROOT/<label>/* tree halved."""
    root = _existing(_path_option("data.root", root), "data.root", want_dir=True)
    resize = _bool_option("data.resize", resize)
    grayscale = _bool_option("data.grayscale", grayscale)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise DataError(f"data.split_seed must be a whole number 0 or more, got {split_seed!r}")

    has = {s: (root / s).is_dir() for s in SPLITS}
    if any(has.values()):
        if not all(has.values()):
            there, missing = ("train", "test") if has["train"] else ("test", "train")
            raise DataError(
                f"{root}: has a {there}/ folder but no {missing}/ folder; give both, or put the "
                f"class folders 0-9 directly in {root}"
            )
        trees = {s: _class_folders(root / s) for s in SPLITS}
        sets = {s: [(f.path, c) for c, fs in trees[s].items() for f in fs] for s in SPLITS}
        origins = {s: str(root / s) for s in SPLITS}
        # Each set's entry follows its own files only.
        files = {s: {"tree": s, "files": _listing_digest(trees[s], root)} for s in SPLITS}
    else:
        classes = _class_folders(root)
        sets = {"train": [], "test": []}
        for c, fs in classes.items():
            halves = split_class([f.name for f in fs], c, split_seed)
            for s, idx in zip(SPLITS, halves):
                sets[s] += [(fs[i].path, c) for i in idx]
        origins = {s: f"{root} ({s} half)" for s in SPLITS}
        digest = _listing_digest(classes, root)
        files = {s: {"half": s, "files": digest, "split_seed": split_seed} for s in SPLITS}

    settings = {
        "version": FOLDER_READER_VERSION,
        "root": str(root.resolve()),
        "resize": resize,
        "grayscale": grayscale,
    }
    keys = {s: {**settings, **files[s]} for s in SPLITS}
    builds = {s: lambda s=s: _decode_set(sets[s], origins[s], resize, grayscale) for s in SPLITS}
    train, test = _cached_pair(cache_dir, "folder", keys, builds)
    return train.check(origins["train"]), test.check(origins["test"])


# ---------------------------------------------------------------------------------------------
# data=mat: MATLAB .mat files


def _resave_labels_line(path: Path, name: str) -> str:
    return f"{name} = double(string({name})); save('{path.name}', '{name}', '-append')"


def _mat_variables(path: Path) -> dict[str, str]:
    """Every variable in a .mat file: name -> MATLAB class of the objects scipy cannot decode
    (categorical, string, ...), "" for the rest. Only used to explain a missing variable.

    scipy files each such object under the name 'None' (the real name is inside the object, and a
    later one overwrites an earlier one; whosmat fails outright), so read them one by one.
    """
    from scipy.io.matlab import loadmat, varmats_from_mat

    found: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for name, stream in varmats_from_mat(f):
                value = loadmat(stream).get("None") if name == "None" else None
                if value is not None and value.dtype.names and "s2" in value.dtype.names:
                    var, cls = bytes(value["s0"].flat[0]), bytes(value["s2"].flat[0])
                    found[var.decode("latin1")] = cls.decode("latin1") or "object"
                elif not name.startswith("__"):
                    found[name] = ""
    except Exception as err:  # the listing only helps a message along; never fatal itself
        log.debug("Could not list the variables in %s: %s", path, err)
    return found


def _mat_images(value: Any, path: Path, name: str) -> np.ndarray:
    """MATLAB's H x W x C x N images as float32 (N, 1, 28, 28) in [0, 1]."""
    if not isinstance(value, np.ndarray) or value.dtype.names or value.dtype.kind not in "buif":
        raise DataError(
            f"{path}: {name} is not a numeric array (it is a MATLAB cell, struct or object); save "
            f"the images as a numeric 28x28x1xN array"
        )
    size = "x".join(map(str, value.shape))
    s = IMAGE_SIZE
    # MATLAB drops trailing singleton dimensions: one image is saved as 28x28.
    if value.shape == (s, s):
        value = value[:, :, None, None]
    elif value.ndim == 3 and value.shape[:2] == (s, s):
        value = value[:, :, None, :]
    if value.ndim != 4 or value.shape[:3] != (s, s, 1):
        raise DataError(f"{path}: {name} is {size} in MATLAB, expected 28x28x1xN (or 28x28xN)")
    # scipy keeps MATLAB's index order (H, W, C, N); the network wants (N, C, H, W).
    images = value.transpose(3, 2, 0, 1)
    kind, dtype = value.dtype.kind, value.dtype
    if dtype == np.uint8:
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255)
    if dtype == np.uint16:
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(65535)
    if kind in "bf":
        return np.ascontiguousarray(images, dtype=np.float32)
    raise DataError(f"{path}: {name} is {dtype}; expected uint8, uint16, single, double or logical")


def _text_label(text: str, path: Path, name: str) -> int:
    t = text.strip()
    if not (t.isascii() and t.lstrip("+-").isdigit()):
        raise DataError(f"{path}: {name} holds the label {text!r}, which is not a digit 0-9")
    return int(t)


def _mat_labels(value: Any, n: int, path: Path, name: str) -> np.ndarray:
    """Numeric, char or cellstr labels as int64; categoricals get the one line that fixes them."""
    if not isinstance(value, np.ndarray) or value.dtype.names:
        raise DataError(
            f"{path}: {name} is a MATLAB struct or object this reader cannot use; re-save the "
            f"labels as numbers in MATLAB with: {_resave_labels_line(path, name)}"
        )
    if value.ndim > 2 or (value.ndim == 2 and min(value.shape) > 1):
        size = "x".join(map(str, value.shape))
        raise DataError(f"{path}: {name} is {size} in MATLAB, expected a vector of {n} labels")
    flat = value.reshape(-1)
    kind = value.dtype.kind
    if kind in "buif":
        as_float = flat.astype(np.float64)
        if not np.isfinite(as_float).all():
            raise DataError(f"{path}: {name} holds NaN or infinite labels")
        frac = as_float != np.round(as_float)
        if frac.any():
            bad = as_float[frac][0]
            raise DataError(f"{path}: {name} holds labels that are not whole numbers (e.g. {bad})")
        return as_float.astype(np.int64)
    if kind == "U":
        # A row of chars ('0123...') comes back from scipy as one string; a column as N strings.
        if flat.size == 1 and n > 1 and len(flat[0]) == n:
            flat = np.array(list(flat[0]))
        return np.array([_text_label(t, path, name) for t in flat], dtype=np.int64)
    if kind == "O":  # a cell array: each cell a char row or a number
        out = []
        for cell in flat:
            cell = np.asarray(cell)
            if cell.dtype.kind == "U" and cell.size == 1:
                out.append(_text_label(str(cell.flat[0]), path, name))
            elif cell.dtype.kind in "buif" and cell.size == 1:
                out.append(int(_mat_labels(cell, 1, path, name)[0]))
            else:
                raise DataError(
                    f"{path}: {name} is a cell array with a cell that is not one label; re-save "
                    f"the labels as numbers in MATLAB with: {_resave_labels_line(path, name)}"
                )
        return np.array(out, dtype=np.int64)
    raise DataError(
        f"{path}: {name} has type {value.dtype}, which this reader cannot use as labels"
    )


def _read_mat(path: Path, part: str) -> DigitArrays:
    """XTrain/YTrain (part 'Train') or XTest/YTest (part 'Test') from one .mat file."""
    from scipy.io import loadmat

    x_name, y_name, a_name = f"X{part}", f"Y{part}", f"angles{part}"
    try:
        contents = loadmat(path, variable_names=[x_name, y_name, a_name], appendmat=False)
    except NotImplementedError as err:  # scipy's answer to the HDF5-based v7.3 format
        raise DataError(
            f"{path}: is a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB "
            f"with: save('{path.name}', '{x_name}', '{y_name}', '-v7')"
        ) from err
    except Exception as err:  # scipy raises many types for files that are not .mat or are cut
        raise DataError(f"{path}: cannot be read as a MATLAB .mat file ({_reason(err)})") from err

    for name in (x_name, y_name):
        if name in contents:
            continue
        held = _mat_variables(path)
        if held.get(name):
            fix = (
                _resave_labels_line(path, name)
                if name == y_name
                else f"{name} = double({name}); save('{path.name}', '{name}', '-append')"
            )
            raise DataError(
                f"{path}: {name} is a MATLAB {held[name]}, which scipy cannot read; re-save it "
                f"in MATLAB with: {fix}"
            )
        raise DataError(
            f"{path}: has no variable {name!r} (it holds: {', '.join(held) or 'nothing'}); "
            f"expected {x_name} and {y_name}"
        )

    images = _mat_images(contents[x_name], path, x_name)
    n = images.shape[0]
    labels = _mat_labels(contents[y_name], n, path, y_name)
    if labels.shape[0] != n:
        raise DataError(
            f"{path}: {x_name} holds {n} images but {y_name} holds {labels.shape[0]} labels; "
            f"the counts must match"
        )
    angles = None
    if a_name in contents:  # digitTrain4DArrayData's third output, when it was saved too
        raw = contents[a_name]
        if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "buif" or raw.size != n:
            raise DataError(f"{path}: {a_name} must be {n} numbers, one angle per image")
        angles = np.round(raw.reshape(-1).astype(np.float64)).astype(np.int64)
    return DigitArrays(images, labels, angles).check(f"{path} ({x_name}/{y_name})")


def mat(
    cache_dir: str | Path | None,
    train_file: str | Path | None = None,
    test_file: str | Path | None = None,
) -> tuple[DigitArrays, DigitArrays]:
    """MATLAB .mat files (v4-v7) holding XTrain/YTrain and XTest/YTest as MATLAB saves them."""
    # Not cached: scipy reads a .mat as fast as the cache would be read, so a copy gains nothing.
    train_path = _existing(_path_option("data.train_file", train_file), "data.train_file", False)
    test_path = _existing(_path_option("data.test_file", test_file), "data.test_file", False)
    return _read_mat(train_path, "Train"), _read_mat(test_path, "Test")


# ---------------------------------------------------------------------------------------------
# data=mnist: the four IDX files

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
        raise DataError(f"{path}: cannot be read ({_reason(err)})") from err
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


SOURCES = {"synthetic": synthetic, "folder": folder, "mat": mat, "mnist": mnist}


def load_source(
    name: str, cache_dir: str | Path | None, options: dict[str, Any]
) -> tuple[DigitArrays, DigitArrays]:
    """Load the named source with its options; DataError for an unknown name."""
    if name not in SOURCES:
        raise DataError(f"data.source={name!r} is not one of {sorted(SOURCES)}")
    return SOURCES[name](cache_dir, **options)
