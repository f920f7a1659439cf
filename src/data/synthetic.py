"""Built-in 28x28 digit images, standing in for MATLAB's `digitTrain4DArrayData` so that the
project runs without downloading anything (docs/data.md compares the two). `style` picks the
look: `handwriting` (src/data/handwriting.py), `print` (src/data/print_fonts.py, the generator
before version 2) or `mixed`, the default, mostly handwriting with some print, as MATLAB's set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import matplotlib
import numpy as np
import PIL
import torch

from src.data import handwriting, print_fonts
from src.data.arrays import NUM_CLASSES, DigitArrays
from src.data.sources.builtin import Style
from src.errors import DataError

# Part of the callers' cache key: bump it whenever the output for the same arguments changes.
# 1: print fonts only; 2: handwriting strokes, print fonts a minority; 3: more templates (long-flag
# and footed 1s, crossed 7, open 4s, one-stroke 5), pen width in proportion to the height.
GENERATOR_VERSION = 3

STYLES: tuple[Style, ...] = get_args(Style)
# Share of print digits per style. 30 % in `mixed`: MATLAB's set has both looks, and a network
# trained on it must read both; handwriting stays the large majority.
PRINT_SHARE = {"mixed": 0.3, "handwriting": 0.0, "print": 1.0}
ANGLE_RANGE = (-45, 45)  # whole degrees, counter-clockwise positive like MATLAB's imrotate


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise DataError(f"data.style={style!r} must be one of {', '.join(STYLES)}")


def generator_settings(style: str = "mixed") -> dict:
    """Everything besides (num_per_class, seed) that the output depends on, as a cache key."""
    _check_style(style)
    settings: dict = {
        "generator_version": GENERATOR_VERSION,
        "style": style,
        "print_share": PRINT_SHARE[style],
        "angle_range": list(ANGLE_RANGE),
        "versions": {
            "numpy": np.__version__,
            "torch": torch.__version__.split("+")[0],
            "pillow": PIL.__version__,
            "matplotlib": matplotlib.__version__,
        },
    }
    if PRINT_SHARE[style] < 1:
        settings["handwriting"] = handwriting.settings()
    if PRINT_SHARE[style] > 0:
        settings["print"] = print_fonts.settings()
        settings["fonts"] = settings["print"]["fonts"]
    return settings


def generate_digits(
    num_per_class: int, seed: int | Sequence[int], style: str = "mixed"
) -> DigitArrays:
    """num_per_class images of each digit 0-9, deterministic in `seed` (numpy's default_rng)."""
    if num_per_class < 1:
        raise ValueError(f"num_per_class must be at least 1, got {num_per_class}")
    _check_style(style)
    rng = np.random.default_rng(seed)
    n = NUM_CLASSES * num_per_class
    # The labels, angles and styles come first, in a fixed order; each style then draws its own
    # numbers from a generator of its own, so the output depends only on seed and style.
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), num_per_class))
    angles = rng.integers(ANGLE_RANGE[0], ANGLE_RANGE[1] + 1, size=n, dtype=np.int64)
    printed = rng.random(n) < PRINT_SHARE[style]
    hand_rng, print_rng = rng.spawn(2)

    images = np.zeros((n, 1, 28, 28), dtype=np.float64)
    if (~printed).any():
        images[~printed, 0] = handwriting.draw(labels[~printed], angles[~printed], hand_rng)
    if printed.any():
        images[printed, 0] = print_fonts.draw(labels[printed], angles[printed], print_rng)
    # Whole multiples of 1/255 like an 8-bit image; rounding also zeroes the faint dust that
    # the soft edges leave around the strokes.
    images = (np.round(images * 255.0) / 255.0).astype(np.float32)
    return DigitArrays(images, labels, angles).check("synthetic digits")
