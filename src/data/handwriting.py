"""Digits drawn as pen strokes: the handwriting half of the built-in generator (docs/data.md).

Each digit's templates (src/data/stroke_templates.py) are strokes through control points, each a
Catmull-Rom spline. Per sample the points are jittered, slanted, stretched, sized, rotated by the
recorded angle and elastically distorted; a round pen whose width and pressure vary along the
stroke then draws them: each pixel takes the smoothed coverage of the nearest pen disc.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import torch

from src.data.arrays import IMAGE_SIZE, NUM_CLASSES
from src.data.stroke_templates import CLOSED, TEMPLATES

_SPAN_SEGMENTS = 10  # segments per unit of span length: about 2 px each at a 20 px height
_LINE_SEGMENTS = 3  # a straight stroke still bends under the elastic distortion


def _span_segments(a: np.ndarray, b: np.ndarray, straight: bool) -> int:
    """How many polyline segments a spline span from a to b is drawn with."""
    if straight:
        return _LINE_SEGMENTS
    return max(2, math.ceil(float(np.linalg.norm(b - a)) * _SPAN_SEGMENTS))


def _catmull_rom(t: float) -> np.ndarray:
    """Weights of the four control points around a span at parameter t in [0, 1)."""
    return 0.5 * np.array(
        [-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3, t + 4 * t**2 - 3 * t**3, -(t**2) + t**3]
    )


@functools.cache
def template(digit: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Template `index` of `digit` as (vertex matrix V x K, control points K x 2, segments S x 2,
    jitter slot per control point K): the polyline's vertices are matrix @ control points; a
    segment joins two vertex indices; points at the same place (a corner where two strokes meet)
    share a jitter slot, so the strokes stay joined."""
    strokes = TEMPLATES[digit][index]
    ctrl = np.array([p for s in strokes for p in s if p != CLOSED], dtype=np.float64)
    rows: list[np.ndarray] = []
    pairs: list[tuple[int, int]] = []
    base = 0
    for stroke in strokes:
        closed = stroke[-1] == CLOSED
        pts = ctrl[base : base + len([p for p in stroke if p != CLOSED])]
        k = len(pts)
        first = len(rows)
        for i in range(k if closed else k - 1):
            m = _span_segments(pts[i], pts[(i + 1) % k], k == 2)
            for t in np.arange(m) / m:
                row = np.zeros(len(ctrl))
                for j, wj in zip(range(i - 1, i + 3), _catmull_rom(float(t)), strict=True):
                    if closed:
                        row[base + j % k] += wj
                    elif j < 0 or j >= k:  # an open end reflects its neighbour: 2 p0 - p1
                        end, inner = (0, 1) if j < 0 else (k - 1, k - 2)
                        row[base + end] += 2 * wj
                        row[base + inner] -= wj
                    else:
                        row[base + j] += wj
                rows.append(row)
        end = np.zeros(len(ctrl))
        end[base if closed else base + k - 1] = 1.0
        rows.append(end)
        pairs += [(v, v + 1) for v in range(first, len(rows) - 1)]
        base += k
    places = {tuple(p): i for i, p in reversed(list(enumerate(ctrl.tolist())))}
    slots = np.array([places[tuple(p)] for p in ctrl.tolist()], dtype=np.int64)
    return np.stack(rows), ctrl, np.array(pairs, dtype=np.int64), slots


def template_counts() -> list[int]:
    """How many templates each digit 0-9 has."""
    return [len(TEMPLATES[d]) for d in range(NUM_CLASSES)]


# Per-sample variation, all uniform unless said otherwise. Lengths in output pixels.
JITTER = 0.01  # control-point jitter (standard deviation, in template heights)
SLANT = (-0.3, 0.1)  # shear of x by -slant * y: more digits lean right, as handwriting does
HEIGHT = (12.0, 20.0)  # height of the upright digit
ASPECT = (0.55, 1.25)  # extra horizontal stretch
# Pen width as a share of the digit's height (1.6-5.2 px): a pen's width goes with the size of
# the writing, so a small digit is not drawn as a blot. Measured above 0.5 (digit_stats), the
# fixed 1.7-3.6 px pens of version 2 gave 1.8 px, MATLAB's digits give 2.3 px and scikit-learn's
# scanned digits, scaled to 20 px, 2.9 px; these give 2.1 px with the print fonts mixed in.
WIDTH = (0.13, 0.26)
PRESSURE = (0.8, 1.1)  # peak ink; above 1 the pen's core saturates at 1
ALONG = 0.15  # how much width and pressure swing along the strokes
ELASTIC = 0.3  # amplitude of each of the elastic field's three waves (standard deviation, px)
WAVELENGTH = (12.0, 30.0)  # of those waves
SHIFT = 1.0  # largest shift of the ink's centre from the image centre
EDGE = (0.5, 1.2)  # the pen's rim fades over +-EDGE px (a smoothstep): from crisp to blurred
_MARGIN = 1.0  # output pixels kept free of ink along every edge
_CENTRE = (0.37, 0.5)  # the middle of a template's box
_MAX_CTRL = 12  # the most control points of any template
_CHUNK = 1 << 20  # pixel-segment pairs drawn at a time (1 MB a float32 array)


def settings() -> dict:
    """Everything that shapes the output besides the random draws, for the cache key."""
    # Through JSON: the cache key compares as JSON reads it back (lists, never tuples).
    return json.loads(json.dumps({
        "templates": {str(d): TEMPLATES[d] for d in range(NUM_CLASSES)},
        "segments": [_SPAN_SEGMENTS, _LINE_SEGMENTS],
        "jitter": JITTER, "slant": SLANT, "height": HEIGHT, "aspect": ASPECT, "width": WIDTH,
        "pressure": PRESSURE, "along": ALONG, "elastic": ELASTIC, "wavelength": WAVELENGTH,
        "shift": SHIFT, "edge": EDGE, "margin": _MARGIN,
    }))  # fmt: skip


def draw(labels: np.ndarray, angles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Handwritten `labels` rotated by `angles` (whole degrees, counter-clockwise) as float64
    (N, 28, 28) images in [0, 1]; every random number comes from `rng`, in a fixed order."""
    n = len(labels)
    counts = np.array(template_counts())
    choice = np.floor(rng.random(n) * counts[labels]).astype(np.int64)
    jitter = rng.normal(0.0, JITTER, size=(n, _MAX_CTRL, 2))
    slant = rng.uniform(*SLANT, size=n)
    height = rng.uniform(*HEIGHT, size=n)
    aspect = rng.uniform(*ASPECT, size=n)
    width = rng.uniform(*WIDTH, size=n) * height
    pressure = rng.uniform(*PRESSURE, size=n)
    along = rng.uniform(0.0, 2 * np.pi, size=(n, 2))  # phases of the swings along the strokes
    waves = rng.normal(0.0, ELASTIC, size=(n, 2, 3))  # x and y displacement, three waves each
    direction = rng.uniform(0.0, 2 * np.pi, size=(n, 2, 3))
    wavelength = rng.uniform(*WAVELENGTH, size=(n, 2, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 2, 3))
    shift = rng.uniform(-SHIFT, SHIFT, size=(n, 2))
    edge = rng.uniform(*EDGE, size=n)

    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
    for digit in range(NUM_CLASSES):
        for index in range(counts[digit]):
            members = np.flatnonzero((labels == digit) & (choice == index))
            if members.size == 0:
                continue
            matrix, ctrl, pairs, slots = template(digit, index)
            pts = ctrl[None] + jitter[members][:, slots]
            verts = (matrix[None, :, :, None] * pts[:, None, :, :]).sum(axis=2)
            m = members
            x = verts[..., 0] - _CENTRE[0]
            y = verts[..., 1] - _CENTRE[1]
            x = (x - slant[m, None] * y) * (height * aspect)[m, None]
            y = y * height[m, None]
            theta = np.radians(angles[m])[:, None]
            cos, sin = np.cos(theta), np.sin(theta)
            x, y = cos * x + sin * y, -sin * x + cos * y
            field = (waves[m], direction[m], wavelength[m], phase[m])
            x, y = x + _elastic(x, y, 0, *field), y + _elastic(x, y, 1, *field)
            t = np.linspace(0.0, 2 * np.pi, verts.shape[1])[None]
            w = width[m, None] * (1.0 + ALONG * np.sin(t + along[m, :1]))
            p = pressure[m, None] * (1.0 + ALONG * np.sin(t + along[m, 1:]))
            e = np.broadcast_to(edge[m, None], w.shape)
            x, y, w = _fit(x, y, w, e, shift[m])
            images[m] = _render(x, y, w, e, p, pairs)
    return images


def _elastic(x, y, axis, waves, direction, wavelength, phase) -> np.ndarray:
    """Displacement along `axis` (0: x, 1: y) of a smooth random field: three plane waves."""
    d = direction[:, axis, None, :]
    k = (2 * np.pi / wavelength[:, axis])[:, None, :]
    arg = k * (np.cos(d) * x[..., None] + np.sin(d) * y[..., None]) + phase[:, axis, None, :]
    return (waves[:, axis, None, :] * np.sin(arg)).sum(axis=2)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, e: np.ndarray, shift: np.ndarray):
    """Centre each digit's ink (its pen discs) in the image, shifted by up to SHIFT px, and shrink
    the ones that would touch the margin."""
    r = w / 2 + e
    lo_x, hi_x = (x - r).min(axis=1), (x + r).max(axis=1)
    lo_y, hi_y = (y - r).min(axis=1), (y + r).max(axis=1)
    room = IMAGE_SIZE - 2 * _MARGIN
    size = np.maximum(hi_x - lo_x, hi_y - lo_y)
    scale = np.minimum(1.0, room / size)[:, None]
    cx, cy = (lo_x + hi_x)[:, None] / 2, (lo_y + hi_y)[:, None] / 2
    x, y = (x - cx) * scale, (y - cy) * scale
    half_w, half_h = (hi_x - lo_x)[:, None] * scale / 2, (hi_y - lo_y)[:, None] * scale / 2
    centre = (IMAGE_SIZE - 1) / 2
    sx = np.clip(shift[:, :1], -(room / 2 - half_w), room / 2 - half_w)
    sy = np.clip(shift[:, 1:], -(room / 2 - half_h), room / 2 - half_h)
    return x + centre + sx, y + centre + sy, w * scale


def _render(x, y, w, e, p, pairs: np.ndarray) -> np.ndarray:
    """_render_chunk over a few digits at a time: the working arrays then stay in the CPU's
    cache, which makes the elementwise arithmetic several times faster."""
    step = max(1, _CHUNK // (len(pairs) * 100))
    threads = torch.get_num_threads()
    # Arrays this small gain nothing from more threads, and on a busy machine lose a lot.
    torch.set_num_threads(1)
    try:
        return np.concatenate(
            [
                _render_chunk(*(v[i : i + step] for v in (x, y, w, e, p)), pairs)
                for i in range(0, len(x), step)
            ]
        )
    finally:
        torch.set_num_threads(threads)


def _render_chunk(x, y, w, e, p, pairs: np.ndarray) -> np.ndarray:
    """Each pixel's ink: the most any pen disc leaves there, its rim's coverage times its
    pressure. Each segment is drawn only in the window of pixels it can reach. The arithmetic
    is float32 sums, products, divisions and square roots, all exactly rounded, so the output
    does not depend on which vector instructions the machine has."""
    n = len(x)
    a, b = pairs[:, 0], pairs[:, 1]
    ax, ay = x[:, a].astype(np.float32), y[:, a].astype(np.float32)
    abx, aby = x[:, b].astype(np.float32) - ax, y[:, b].astype(np.float32) - ay
    rad = ((w[:, a] + w[:, b]) / 4).astype(np.float32)  # half the segment's mean width
    prs = ((p[:, a] + p[:, b]) / 2).astype(np.float32)
    soft = (0.5 / e[:, a]).astype(np.float32)  # the smoothstep's slope
    # Each segment is drawn in a square window of pixels: wide enough for the longest segment
    # and the farthest its pen's rim reaches. Pixel centres sit at whole coordinates 0-27.
    reach = float((rad + e[:, a]).max())
    side = min(IMAGE_SIZE, math.ceil(max(np.abs(abx).max(), np.abs(aby).max()) + 2 * reach) + 1)
    lo_x, lo_y = np.minimum(ax, ax + abx), np.minimum(ay, ay + aby)
    ox = np.clip(np.floor(lo_x - reach), 0, IMAGE_SIZE - side).astype(np.int64)
    oy = np.clip(np.floor(lo_y - reach), 0, IMAGE_SIZE - side).astype(np.int64)
    offs = torch.arange(side)
    wy, wx = (g.reshape(-1) for g in torch.meshgrid(offs, offs, indexing="ij"))
    t = torch.from_numpy
    index = ((t(oy)[..., None] + wy) * IMAGE_SIZE + t(ox)[..., None] + wx).reshape(n, -1)
    # Pixel centres relative to the segment's start, (N, S, W*W).
    apx = t((ox - ax).astype(np.float32))[..., None] + wx.float()
    apy = t((oy - ay).astype(np.float32))[..., None] + wy.float()
    abx, aby = t(abx)[..., None], t(aby)[..., None]
    inv = 1.0 / (abx * abx + aby * aby).clamp_min(1e-12)
    u = (apx * abx).add_(apy * aby).mul_(inv).clamp_(0.0, 1.0)
    dx, dy = apx.sub_(u * abx), apy.sub_(u.mul_(aby))
    dist = dx.mul_(dx).add_(dy.mul_(dy)).sqrt_()
    # A smoothstep across +-EDGE of the pen's rim: the soft edge, with no transcendental function.
    s = t(rad)[..., None].sub(dist).mul_(t(soft)[..., None]).add_(0.5).clamp_(0.0, 1.0)
    ink = s.mul(s).mul_(s.mul(-2.0).add_(3.0)).mul_(t(prs)[..., None])
    out = torch.zeros(n, IMAGE_SIZE * IMAGE_SIZE, dtype=torch.float32)
    out.scatter_reduce_(1, index, ink.reshape(n, -1), "amax")
    return out.reshape(-1, IMAGE_SIZE, IMAGE_SIZE).clamp_(0.0, 1.0).numpy().astype(np.float64)
