"""One written digit, framed the way the built-in digits are: `data.frame=true`.

A photo or scan of a digit written on paper is nothing like a 28x28 training image: dark ink on
light paper, the digit small somewhere in a large picture. Resized whole, it is a gray smudge
the network cannot read. Framed, it is what the network learnt from: light ink on black,
cropped to the ink, its longer side scaled to BOX pixels (the generated digits' ink box is 19 x
15 px at the median), centred, in 8-bit levels.

`frame_digit` does the cropping, scaling and centring (scikit-learn's digits go through it in
`benchmarks/transfer.py`); `frame_photo` first turns a photo's pixels into ink on black.
"""

from __future__ import annotations

import numpy as np

from src.data.arrays import IMAGE_SIZE
from src.errors import DataError

BOX = 20  # the longer side of the ink after scaling, in pixels
# Below this share of the ink's contrast a pixel is paper: its grain, shading, a faint ruling.
PAPER_NOISE = 0.15
# An image whose darkest and lightest parts differ by less than this holds no digit.
MIN_CONTRAST = 0.15
STRAY = 0.002  # share of the ink's mass, along each axis, left outside the digit's box


def bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` resized to width x height, bicubic (antialiased when shrinking, like MATLAB's
    imresize), clipped to [0, 1]: what `data.resize=true` and the framing both use."""
    from PIL import Image

    small = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F")
    out = small.resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float64), 0.0, 1.0)


def frame_digit(image: np.ndarray, box: int = BOX) -> np.ndarray:
    """One grayscale digit (light ink on black, any size, values >= 0, max > 0) as a float32
    28x28 image in [0, 1]: cropped to its ink, scaled bicubically so that its longer side is
    `box` px (aspect ratio kept), centred."""
    x = np.asarray(image, dtype=np.float64)
    x = x / x.max()
    rows, cols = np.flatnonzero(x.any(axis=1)), np.flatnonzero(x.any(axis=0))
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = x.shape
    scale = box / max(h, w)
    small = bicubic(x, max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    top, left = (IMAGE_SIZE - small.shape[0]) // 2, (IMAGE_SIZE - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    # 8-bit levels like every other source; rounding also drops bicubic's faint ringing.
    return (np.round(out * 255.0) / 255.0).astype(np.float32)


def frame_photo(pixels: np.ndarray, path: str = "image") -> np.ndarray:
    """A photo or scan of one digit (gray values in [0, 1], any size) framed by `frame_digit`.

    The paper is the median of the image's border: when it is light the image is inverted, so
    dark ink on white paper and light ink on black both become light ink on black. The paper's
    level is taken off, the ink scaled to a peak of 1 and everything below PAPER_NOISE of it
    dropped. DataError naming `path` when nothing stands out from the paper."""
    a = np.asarray(pixels, dtype=np.float64)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    paper = float(np.median(border))
    if paper > 0.5:
        a, paper = 1.0 - a, 1.0 - paper
    ink = a - paper
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise DataError(
            f"{path}: no digit to frame (data.frame=true): nothing in it differs from its "
            f"background by more than {max(contrast, 0.0):.2f} (needs {MIN_CONTRAST})"
        )
    ink = np.clip((ink / contrast - PAPER_NOISE) / (1.0 - PAPER_NOISE), 0.0, 1.0)
    # A speck of dust far from the digit would stretch its box: the box holds all but STRAY of
    # the ink's mass along each axis, and what lies outside it is dropped.
    for axis in (0, 1):
        mass = np.cumsum(ink.sum(axis=1 - axis))
        lo, hi = np.searchsorted(mass, [STRAY * mass[-1], (1.0 - STRAY) * mass[-1]])
        keep = np.zeros(ink.shape[axis], dtype=bool)
        keep[lo : hi + 1] = True
        ink = ink * (keep[:, None] if axis == 0 else keep[None, :])
    return frame_digit(ink)
