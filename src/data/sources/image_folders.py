"""data=folder: images in class folders, MATLAB's DigitDataset layout.

`decode_images` is also what `python -m src.predict` reads its images with.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES, DigitArrays
from src.data.cache import cached_sets
from src.data.frame import bicubic, frame_photo
from src.data.sources.common import SPLITS, existing_option
from src.errors import DataError, first_line

# Log under the package's name, as before it was split: the name shows in each run's train.log.
log = logging.getLogger(__package__)

# Part of the folder source's cache key: bump it whenever the same files would decode differently.
FOLDER_READER_VERSION = 1


# Files that operating systems and file managers drop into folders; never a digit image.
_JUNK_FILES = {"thumbs.db", "desktop.ini", "__macosx"}


def is_junk(name: str) -> bool:
    # Hidden names cover .DS_Store, macOS's ._* resource forks and .ipynb_checkpoints.
    return name.startswith(".") or name.lower() in _JUNK_FILES


def split_class(names: Sequence[str], label: int, split_seed: int) -> tuple[list[int], list[int]]:
    """Indices of one class's files for training and for testing (the seeded rule of docs/data.md).

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
        raise DataError(
            f"{folder}: holds no class folders named 0-9 (see the layouts in docs/data.md)"
        )
    if ignored:
        log.warning(
            "Ignored %d file(s) beside the class folders in %s (e.g. %s).",
            len(ignored),
            folder,
            ignored[0],
        )
    return dict(sorted(classes.items()))


def _pixels(im: Any, path: str, grayscale: bool) -> np.ndarray:
    """One decoded Pillow image as float32 gray values in [0, 1] (its own size)."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16- and 32-bit integers are taken as 16-bit data, floats as they are; check the result.
        a = np.asarray(im, dtype=np.float32) / (1.0 if mode == "F" else 65535.0)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: has NaN or infinite pixel values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: pixel values span [{lo:g}, {hi:g}], expected [0, 1]")
        return a
    if mode in ("L", "LA", "La"):  # like MATLAB's imread, an alpha channel is ignored
        im = im.getchannel(0)
    elif mode in ("P", "PA") and not grayscale:
        rgb = np.asarray(im.convert("RGB"))
        if not (rgb == rgb[..., :1]).all():  # a palette of grays is one channel, however stored
            raise DataError(
                f"{path}: is a colour (palette) image; add data.grayscale=true to convert it "
                "to gray"
            )
    elif not grayscale:
        raise DataError(
            f"{path}: has colour channels ({mode}), expected grayscale; add data.grayscale=true "
            f"to convert colour images to gray"
        )
    # Every 8-bit image is Pillow's "L" from here: for colour, Pillow's weights are rgb2gray's
    # (ITU-R BT.601), an alpha channel ignored.
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def decode_image(path: str, resize: bool, grayscale: bool, frame: bool = False) -> np.ndarray:
    """One image file as a float32 28x28 array in [0, 1]; DataError naming the file otherwise.
    With `frame`, an image of any size is one written digit, framed by `frame_photo`.

    Also what `python -m src.predict` reads its images with, so both refuse and convert alike."""
    from PIL import Image, ImageOps

    if os.path.exists(path) and not os.path.isfile(path):  # a pipe or a device: read forever
        raise DataError(f"{path}: is not a regular file, so not an image")
    try:
        with warnings.catch_warnings():  # a phone's photo (100 megapixels) is no decompression
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # bomb; past
            with Image.open(path) as im:  # Pillow's limit for an error, one line still
                im.load()  # a phone's photo turned upright by its EXIF tag, as viewers show it
                a = _pixels(ImageOps.exif_transpose(im), path, grayscale)
    except DataError:
        raise
    except Exception as err:  # Pillow raises many types for unreadable or truncated files
        raise DataError(f"{path}: cannot be read as an image ({first_line(err)})") from err
    if frame:
        return frame_photo(a, path)
    if a.shape != (IMAGE_SIZE, IMAGE_SIZE):
        if not resize:
            raise DataError(
                f"{path}: image is {a.shape[0]}x{a.shape[1]} pixels (height x width), expected "
                f"28x28; add data.resize=true to resize images (or data.frame=true if each image "
                f"is a photo of one written digit)"
            )
        a = bicubic(a, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
    return a


def decode_images(paths: Sequence[str], resize: bool, grayscale: bool, frame: bool) -> np.ndarray:
    """Image files as one float32 (N, 1, 28, 28) array, each read by `decode_image`."""
    images = np.empty((len(paths), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, path in enumerate(paths):
        images[i, 0] = decode_image(path, resize, grayscale, frame)
    return images


def _decode_set(
    files: Sequence[tuple[str, int]], origin: str, resize: bool, grayscale: bool, frame: bool
) -> DigitArrays:
    """(path, label) pairs decoded into one checked DigitArrays."""
    images = decode_images([path for path, _ in files], resize, grayscale, frame)
    labels = np.fromiter((label for _, label in files), dtype=np.int64, count=len(files))
    return DigitArrays(images, labels).check(origin)


def file_stamp(path: str) -> tuple[int, int]:
    """An input file's size and modification time (ns), which change when it is rewritten."""
    try:
        st = os.stat(path)
    except OSError as err:  # a broken link, say: a read problem of the input (exit 2)
        raise DataError(f"{path}: cannot be read ({err.strerror})") from err
    return st.st_size, st.st_mtime_ns


def _listing_digest(classes: dict[int, list[os.DirEntry]], root: Path) -> str:
    """Changes whenever a file is added, removed, renamed or rewritten (size or mtime)."""
    h = hashlib.sha256()
    for files in classes.values():
        for f in files:
            size, mtime = file_stamp(f.path)
            h.update(f"{os.path.relpath(f.path, root)}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def folder(
    cache_dir: str | Path | None,
    root: str | Path | None = None,
    resize: bool = False,
    grayscale: bool = False,
    split_seed: int = 0,
    frame: bool = False,
    *,
    splits: tuple[str, ...] = SPLITS,
) -> tuple[DigitArrays | None, DigitArrays]:
    """Images in class folders: ROOT/{train,test}/<label>/*, or one ROOT/<label>/* tree halved."""
    root = existing_option("data.root", root, want_dir=True)
    has = {s: (root / s).is_dir() for s in SPLITS}
    if any(has.values()):
        if not all(has[s] for s in splits):
            there, missing = ("train", "test") if has["train"] else ("test", "train")
            raise DataError(
                f"{root}: has a {there}/ folder but no {missing}/ folder; give both, or put the "
                f"class folders 0-9 directly in {root}"
            )
        others = [e for e in sorted(os.listdir(root)) if e not in SPLITS and not is_junk(e)]
        if others:  # ROOT/val/ of an ImageFolder layout, say: not read, so not unseen either
            log.warning(
                "Ignored %s beside train/ and test/ in %s: data=folder reads those two "
                "(validation images: data.val_fraction).",
                ", ".join(others),
                root,
            )
        trees = {s: _class_folders(root / s) for s in splits}
        sets = {s: [(f.path, c) for c, fs in trees[s].items() for f in fs] for s in splits}
        origins = {s: str(root / s) for s in SPLITS}
        # Each set's entry follows its own files only.
        files = {s: {"tree": s, "files": _listing_digest(trees[s], root)} for s in splits}
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
        **({"frame": True} if frame else {}),  # caches read before data.frame stay valid
    }
    build = {
        s: lambda s=s: _decode_set(sets[s], origins[s], resize, grayscale, frame) for s in splits
    }
    read = cached_sets(
        cache_dir, {f"folder-{s}": ({**settings, **files[s]}, build[s]) for s in splits}
    )
    train = read["folder-train"].check(origins["train"]) if "train" in splits else None
    return train, read["folder-test"].check(origins["test"])
