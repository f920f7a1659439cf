"""The one in-memory form every digit source produces: images, labels and (optionally) angles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from src.errors import DataError

IMAGE_SIZE = 28
NUM_CLASSES = 10


def batch_problem(batch_size: int, images: int, source: str, processes: int = 1) -> str | None:
    """Why a mini-batch of `batch_size` for each of `processes` (DDP) cannot be cut from `images`
    training images, or None."""
    if images >= batch_size * processes:
        return None
    if processes > 1:
        return (
            f"data.batch_size={batch_size} for each of {processes} processes is "
            f"{batch_size * processes} images, more than the {images} training images of data "
            f"source '{source}': not one full mini-batch each to train on; lower data.batch_size"
        )
    return (
        f"data.batch_size={batch_size} is larger than the {images} training images of data "
        f"source '{source}': not one full mini-batch to train on"
    )


def overfit_problem(overfit_batches: int, batch_size: int, images: int, source: str) -> str | None:
    """Why `data.overfit_batches` mini-batches cannot be cut from `images` training images."""
    wanted = overfit_batches * batch_size
    if wanted <= images:
        return None
    return (
        f"data.overfit_batches={overfit_batches} needs {wanted} training images (x "
        f"data.batch_size={batch_size}); data source '{source}' has {images}"
    )


def num_batches(
    images: int, batch_size: int, processes: int = 1, training: bool = False, overfit: int = 0
) -> int:
    """An epoch's batches of `images` in the process that gets fewest, as the loaders deal them
    out among `processes`: training's full mini-batches (or `overfit` of them); another split's
    batches, a smaller last one included, at least one a process."""
    if training:
        return (overfit or images // batch_size) // processes
    return max(-(-images // batch_size) // processes, 1)  # fewer than processes: smaller ones


def limit_problem(split: str, limit: object, batches: int) -> str | None:
    """Why Lightning's `trainer.limit_<split>_batches` fraction leaves none of `batches`."""
    if not (isinstance(limit, float) and 0 < limit < 1 and batches and batches * limit < 1):
        return None
    least = math.ceil(1000 / batches) / 1000
    use = f"at least {least}" if least < 1 else "1.0 (all)"
    return (
        f"trainer.limit_{split}_batches={limit} of the {batches} {split} batch"
        f"{'es' if batches > 1 else ''} is less than one: use {use}, or a number of batches"
    )


def held_out(images: int, fraction: float) -> int:
    """Of a class's `images`, how many the validation split holds out: round(n * fraction),
    halves rounded up."""
    return int(math.floor(images * fraction + 0.5))


def split_problem(
    per_class: dict[int, int], fraction: float, batch_size: int, source: str, training: bool
) -> str | None:
    """Why `data.val_fraction` cannot split training images counted `per_class` (label ->
    images), or None: it must hold out some image, leave each class one, and, where the run
    trains, leave a full mini-batch."""
    what, total = f"data.val_fraction={fraction}", sum(per_class.values())
    held = {label: held_out(n, fraction) for label, n in per_class.items()}
    if not any(held.values()):
        return (
            f"{what} holds out no image of the {total} training images (each class "
            "holds out round(n * data.val_fraction)): raise it, or set 0 for no validation"
        )
    for label, n in per_class.items():
        if held[label] == n:
            return (
                f"{what} holds out all {n} training image(s) of class {label}: none "
                "is left to train on; lower data.val_fraction or add images"
            )
    kept = total - sum(held.values())
    if training and kept < batch_size:
        return (
            f"{what} leaves {kept} of the {total} training images of data source "
            f"'{source}', fewer than data.batch_size={batch_size}: not one full "
            "mini-batch to train on; lower data.val_fraction or data.batch_size"
        )
    return None


@dataclass(frozen=True)
class DigitArrays:
    """A set of digit images: `images` float32 (N, 1, 28, 28) in [0, 1], `labels` int64 (N,) in 0-9.

    `angles` (int64, N) is the rotation in whole degrees each image was drawn with, where the source
    knows it (the built-in generator and MATLAB's `digitTrain4DArrayData` do), else None.
    """

    images: np.ndarray
    labels: np.ndarray
    angles: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def check(self, origin: str) -> DigitArrays:
        """Raise DataError naming `origin` unless the arrays are well formed; return self."""
        x, y = self.images, self.labels
        if x.ndim != 4 or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"{origin}: images have shape {tuple(x.shape)}, expected (N, 1, 28, 28)"
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{origin}: {x.shape[0]} images but {y.shape[0]} labels; the counts must match"
            )
        if x.shape[0] == 0:
            raise DataError(f"{origin}: holds no images")
        if x.dtype != np.float32:
            raise DataError(f"{origin}: images are {x.dtype}, expected float32")
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise DataError(f"{origin}: {bad} image(s) contain NaN or infinite pixel values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            scaled = "; divide them by 255" if lo >= 0.0 and hi <= 255.0 else ""  # 8-bit values
            raise DataError(
                f"{origin}: pixel values span [{lo:g}, {hi:g}], expected [0, 1]{scaled}"
            )
        if y.dtype != np.int64:
            raise DataError(f"{origin}: labels are {y.dtype}, expected int64")
        out = (y < 0) | (y >= NUM_CLASSES)
        if out.any():
            # MATLAB's double(Y) of categorical digits: their category numbers, 1 to 10
            one_based = y.min() >= 1 and y.max() <= NUM_CLASSES
            shifted = "; 1-10 are category numbers: subtract 1" if one_based else ""
            raise DataError(
                f"{origin}: {int(out.sum())} label(s) outside 0-9 (e.g. {int(y[out][0])}){shifted}"
            )
        if self.angles is not None and self.angles.shape != y.shape:
            raise DataError(f"{origin}: {self.angles.shape[0]} angles for {y.shape[0]} labels")
        return self
