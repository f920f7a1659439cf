"""data=mat: MATLAB .mat files (v4-v7) holding XTrain/YTrain and XTest/YTest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES, DigitArrays
from src.data.sources.common import SPLITS, existing_option
from src.errors import DataError, first_line

# Log under the package's name, as before it was split: the name shows in each run's train.log.
log = logging.getLogger(__package__)


# How MATLAB turns an image object into a plain array: double() keeps a dlarray a dlarray.
_AS_ARRAY = {"dlarray": "gather(extractdata({}))", "gpuArray": "gather({})"}


def _resave_labels_line(path: Path, *names: str) -> str:
    converted = " ".join(f"{name} = double(string({name}));" for name in names)
    return f"{converted} save('{path.name}', {', '.join(map(repr, names))}, '-append')"


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
    # MATLAB drops trailing singleton dimensions: one image is saved as 28x28, N as 28x28xN.
    if value.ndim in (2, 3) and value.shape[:2] == (s, s):
        value = value.reshape(s, s, 1, value.size // (s * s))
    if value.ndim != 4 or value.shape[:3] != (s, s, 1):
        raise DataError(f"{path}: {name} is {size} in MATLAB, expected 28x28x1xN (or 28x28xN)")
    # scipy keeps MATLAB's index order (H, W, C, N); the network wants (N, C, H, W).
    images = value.transpose(3, 2, 0, 1)
    kind, dtype = value.dtype.kind, value.dtype
    if dtype in (np.uint8, np.uint16):  # full scale: numpy's iinfo, 255 or 65535
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(np.iinfo(dtype).max)
    if kind in "bf":
        return np.ascontiguousarray(images, dtype=np.float32)
    raise DataError(f"{path}: {name} is {dtype}; expected uint8, uint16, single, double or logical")


def _text_label(text: str, path: Path, name: str) -> int:
    t = text.strip()
    if not (t.isascii() and t.lstrip("+-").isdigit()):
        raise DataError(f"{path}: {name} holds the label {str(text)!r}, which is not a digit 0-9")
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
        hint = ""
        if value.ndim == 2 and np.isin(value, (0, 1)).all():  # one-hot labels, maybe
            # the axis the classes lie along: 10 long, with one 1 for each label
            axes = [d for d in (0, 1) if value.shape[d] == NUM_CLASSES]
            axes = [d for d in axes if (value.sum(axis=d) == 1).all()]
            if len(axes) == 1 and value.shape[1 - axes[0]] == n:
                hint = (
                    f"; one-hot labels become digits in MATLAB with: [~, {name}] = max({name}, "
                    f"[], {axes[0] + 1}); {name} = {name} - 1; save('{path.name}', '{name}', "
                    "'-append')"
                )
        raise DataError(
            f"{path}: {name} is {size} in MATLAB, expected a vector of {n} labels{hint}"
        )
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
        if (huge := np.abs(as_float) > 2**31).any():  # far out: past int64 they would wrap round
            raise DataError(f"{path}: {name} holds labels outside 0-9 (e.g. {as_float[huge][0]:g})")
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
            f"with all it holds: S = load('{path.name}'); save('{path.name}', '-struct', 'S', "
            "'-v7')"
        ) from err
    except Exception as err:  # scipy raises many types for files that are not .mat or are cut
        raise DataError(
            f"{path}: cannot be read as a MATLAB .mat file ({first_line(err)})"
        ) from err

    for name in (x_name, y_name):
        if name in contents:
            continue
        held = _mat_variables(path)
        if held.get(name):
            fix = (
                _resave_labels_line(path, *(y for y in ("YTrain", "YTest") if held.get(y)))
                if name == y_name  # both sets' labels, where the file holds both so
                else f"{name} = {_AS_ARRAY.get(held[name], 'double({})').format(name)}; "
                f"save('{path.name}', '{name}', '-append')"
            )
            raise DataError(
                f"{path}: {name} is a MATLAB {held[name]}, which scipy cannot read; re-save it "
                f"in MATLAB with: {fix}"
            )
        try:  # named variables are read until the file ends, even one cut short: is it?
            loadmat(path, appendmat=False)
        except Exception as err:
            raise DataError(
                f"{path}: cannot be read as a MATLAB .mat file ({first_line(err)})"
            ) from err
        raise DataError(
            f"{path}: has no variable {name!r} (it holds: {', '.join(held) or 'nothing'}); "
            f"expected {x_name} and {y_name}"
        )

    for name, value in contents.items():
        if hasattr(value, "toarray"):  # a MATLAB sparse matrix (scipy's): its numbers in full
            contents[name] = value = value.toarray()
        if isinstance(value, np.ndarray) and value.dtype.kind == "c":
            raise DataError(f"{path}: {name} holds complex numbers; save its real part")
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
    *,
    splits: tuple[str, ...] = SPLITS,
) -> tuple[DigitArrays | None, DigitArrays]:
    """MATLAB .mat files (v4-v7) holding XTrain/YTrain and XTest/YTest as MATLAB saves them."""
    # Not cached: scipy reads a .mat as fast as the cache would be read, so a copy gains nothing.
    train_path = None
    if "train" in splits:
        train_path = existing_option("data.train_file", train_file, want_dir=False)
    test_path = existing_option("data.test_file", test_file, want_dir=False)
    train = None if train_path is None else _read_mat(train_path, "Train")
    return train, _read_mat(test_path, "Test")
