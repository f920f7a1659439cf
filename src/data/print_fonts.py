"""Print digits drawn from matplotlib's bundled fonts: the print half of the built-in generator.

Each digit is drawn large with Pillow (the stroke width varying), put through a random affine
transformation (rotation in whole degrees, scale, aspect, shift), averaged down to 28x28, which
antialiases the edges, and dimmed to a random peak brightness. The ranges below were tuned on
5,000 images against the pixel and bounding-box statistics of MATLAB's own digit data.
"""

from __future__ import annotations

import functools
import math
import pathlib
from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES
from src.data.digit_stats import stroke_widths
from src.errors import DataError

# Fonts whose digits were checked by eye: ordinary lining figures, ten distinct glyphs, and no pair
# (1 vs 7 especially) that becomes ambiguous when rotated; upright and italic faces mixed. Left out:
# cmmi10 (old-style figures of differing heights), cmex10 / cmsy10 / STIXNonUni* / STIXSiz*
# (symbols or no digits at all), DejaVu*Display (no digits), LastResortHE (a placeholder box for
# every character), and the six DejaVu bold faces: their strokes alone put about 22 % of the pixels
# above 0.1 where MATLAB's digits have 15 %, so heavier weights come from the stroke width instead.
# _has_usable_digits re-checks the first few of these points on whatever matplotlib is installed.
_FONT_NAMES = (
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralBolIta.ttf",
    "STIXGeneralItalic.ttf",
    "cmb10.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)

# Drawing happens at _SUPERSAMPLE times the output resolution; averaging each 4x4 block afterwards
# is what antialiases the edges.
_SUPERSAMPLE = 4
_REF_FONT_SIZE = 96  # glyphs are drawn once at this size and scaled by the affine transform
_CANVAS = 40 * _SUPERSAMPLE  # big enough for any centred glyph before the 28x28 window is cut
_MARGIN = 1  # output pixels kept free of ink along every edge, so no digit looks cut off

# Transform ranges, all uniform, tuned on 5,000 images against MATLAB's statistics. Heights are in
# output pixels and apply before the rotation, which widens the ink's bounding box.
_HEIGHT_RANGE = (12.5, 24.0)  # height of the unrotated ink
_ASPECT_RANGE = (0.85, 1.2)  # extra horizontal stretch
# Stroke thickness as a share of the height, reached through the stroke width. Faces already
# thicker than the draw keep their own strokes, so the low end mostly leaves glyphs as designed.
_THICKNESS_RANGE = (0.04, 0.10)
_PEAK_RANGE = (0.62, 0.95)  # brightness of the strokes: MATLAB's digits are grey, not white
# Largest shift from the centre, further clipped so that no ink leaves the frame. Kept small: the
# reference network has no pooling, and a +-3 px shift cost it 2-3 points of test accuracy.
_SHIFT_MAX = 1.0
_MAX_STROKE = 24  # at _REF_FONT_SIZE; bounds the glyph cache


def _font_dir() -> pathlib.Path:
    return pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _draw(path: str, digit: int, stroke: int) -> np.ndarray:
    """The digit as a uint8 mask cropped to its ink, drawn at the reference size."""
    font = _font(path, _REF_FONT_SIZE)
    side = 2 * _REF_FONT_SIZE + 2 * stroke
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).text(
        (side / 2, side / 2),
        str(digit),
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    box = img.getbbox()  # of the ink: the non-zero pixels
    return np.asarray(img.crop(box)) if box else np.zeros((0, 0), dtype=np.uint8)


def _has_usable_digits(path: pathlib.Path) -> bool:
    """Ten non-empty, mutually distinct digit glyphs of about the same height."""
    masks = [_draw(str(path), d, 0) for d in range(NUM_CLASSES)]
    if any((m >= 128).sum() < 20 for m in masks):
        return False
    # Lining figures share one height; the descending italic 4 of cmti10 is still within bounds,
    # the old-style figures of cmmi10 and the symbols of cmex10 / cmsy10 are not.
    heights = np.array([m.shape[0] for m in masks])
    median = np.median(heights)
    if heights.min() < 0.8 * median or heights.max() > 1.3 * median:
        return False
    blobs = {(m.shape, m.tobytes()) for m in masks}
    return len(blobs) == NUM_CLASSES


@functools.cache
def _fonts() -> tuple[pathlib.Path, ...]:
    paths = [_font_dir() / name for name in sorted(_FONT_NAMES)]
    found = tuple(p for p in paths if p.is_file() and _has_usable_digits(p))
    if not found:
        raise DataError(f"no usable digit fonts among {list(_FONT_NAMES)} in {_font_dir()}")
    return found


def font_files() -> list[pathlib.Path]:
    """The TrueType fonts drawn with, from matplotlib's mpl-data/fonts/ttf, in sorted order."""
    return list(_fonts())


def settings() -> dict:
    """Everything besides the random draws that the output depends on, for the cache key."""
    return {
        "fonts": [p.name for p in _fonts()],
        "supersample": _SUPERSAMPLE,
        "ref_font_size": _REF_FONT_SIZE,
        "margin": _MARGIN,
        "height_range": list(_HEIGHT_RANGE),
        "aspect_range": list(_ASPECT_RANGE),
        "thickness_range": list(_THICKNESS_RANGE),
        "peak_range": list(_PEAK_RANGE),
        "shift_max": _SHIFT_MAX,
        "max_stroke": _MAX_STROKE,
        # Pillow's and matplotlib's versions: in generator_settings' own "versions".
        "versions": {"freetype": features.version("freetype2")},
    }


@dataclass(frozen=True)
class _Glyph:
    mask: Image.Image  # "L" image cropped to the ink
    height: int  # of the ink, in reference pixels
    thickness: float  # typical stroke thickness, in reference pixels


@functools.cache
def _glyph(font_index: int, digit: int, stroke: int) -> _Glyph:
    mask = _draw(str(_fonts()[font_index]), digit, stroke)
    # The stroke thickness as digit_stats measures it (2 x area / perimeter), of the ink's mask.
    thickness = float(stroke_widths(mask[None] >= 128)[0])
    return _Glyph(Image.fromarray(mask), mask.shape[0], thickness)


def _stroke_for(font_index: int, digit: int, ratio: float) -> int:
    """The stroke width (reference pixels) that makes the glyph's strokes `ratio` times as thick as
    the glyph is high: stroking adds 2 * stroke to both the thickness and the height."""
    base = _glyph(font_index, digit, 0)
    stroke = (ratio * base.height - base.thickness) / (2.0 * (1.0 - ratio))
    return int(np.clip(round(stroke), 0, _MAX_STROKE))


def _render(glyph: _Glyph, height: float, aspect: float, angle: int) -> Image.Image:
    """The transformed glyph centred on a blank supersampled canvas."""
    scale = _SUPERSAMPLE * height / glyph.height
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    # Forward map from glyph to canvas pixels is rotation @ stretch; y points down, so this
    # rotation turns the digit counter-clockwise on screen for positive angles.
    forward = np.array([[cos, sin], [-sin, cos]]) @ np.diag([scale * aspect, scale])
    inverse = np.linalg.inv(forward)
    centre = np.array([_CANVAS / 2, _CANVAS / 2])
    glyph_centre = np.array([glyph.mask.width / 2, glyph.mask.height / 2])
    offset = glyph_centre - inverse @ centre
    data = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return glyph.mask.transform(
        (_CANVAS, _CANVAS), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR
    )


def _window_start(lo: int, hi: int, u: float) -> int:
    """Top (or left) canvas coordinate of the output window: the ink centred, then shifted by
    u * _SHIFT_MAX output pixels, but never so far that ink would fall outside the margin."""
    window = IMAGE_SIZE * _SUPERSAMPLE
    inner = window - 2 * _MARGIN * _SUPERSAMPLE
    margin = _MARGIN * _SUPERSAMPLE
    room = max(inner - (hi - lo), 0) / 2
    shift = u * min(_SHIFT_MAX * _SUPERSAMPLE, room)
    start = int(round((lo + hi) / 2 - shift - window / 2))
    # Rounding to whole canvas pixels must not push ink into the margin either.
    return min(max(start, hi + margin - window), lo - margin)


def _draw_one(
    font_index: int,
    digit: int,
    angle: int,
    height: float,
    aspect: float,
    thickness: float,
    shift: tuple[float, float],
) -> np.ndarray:
    """One image as float64 (28, 28) in [0, 1] before brightness and quantisation."""
    stroke = _stroke_for(font_index, digit, thickness)
    glyph = _glyph(font_index, digit, stroke)
    inner = (IMAGE_SIZE - 2 * _MARGIN) * _SUPERSAMPLE
    name = _fonts()[font_index].name
    # A tall glyph turned by 45 degrees can outgrow the frame: shrink it until it fits, which
    # takes one or two passes (each one cuts the size by at least 3 %).
    for _ in range(20):
        image = _render(glyph, height, aspect, angle)
        box = image.getbbox()  # of the ink: (left, top, right, bottom)
        if box is None:
            raise DataError(f"font {name} drew digit {digit} with no ink")
        size = max(box[3] - box[1], box[2] - box[0])
        if size <= inner:
            break
        height *= 0.97 * inner / size
    else:
        raise DataError(f"font {name}: digit {digit} at {angle} degrees does not fit in the frame")
    top = _window_start(box[1], box[3], shift[1])
    left = _window_start(box[0], box[2], shift[0])
    side = IMAGE_SIZE * _SUPERSAMPLE
    # The ink of a rotated glyph need not be centred on the canvas (think of a 7), so the window
    # can reach past the canvas edge: Pillow's crop is blank there.
    window = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float64)
    s = _SUPERSAMPLE
    return window.reshape(IMAGE_SIZE, s, IMAGE_SIZE, s).mean(axis=(1, 3)) / 255.0


def draw(labels: np.ndarray, angles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Print `labels` rotated by `angles` (whole degrees, counter-clockwise) as float64
    (N, 28, 28) images in [0, 1]; every random number comes from `rng`, in a fixed order."""
    n = len(labels)
    fonts = rng.integers(0, len(_fonts()), size=n)
    heights = rng.uniform(*_HEIGHT_RANGE, size=n)
    aspects = rng.uniform(*_ASPECT_RANGE, size=n)
    thicknesses = rng.uniform(*_THICKNESS_RANGE, size=n)
    peaks = rng.uniform(*_PEAK_RANGE, size=n)
    shifts = rng.uniform(-1.0, 1.0, size=(n, 2))
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    # tolist() gives each number as Python's int or float, as _draw_one takes them.
    columns = [c.tolist() for c in (fonts, labels, angles, heights, aspects, thicknesses)]
    for i, args in enumerate(zip(*columns, map(tuple, shifts.tolist()))):
        images[i] = _draw_one(*args)
    return images * peaks[:, None, None]
