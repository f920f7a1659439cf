"""The built-in digit generator: determinism, format, and a match to MATLAB's digit statistics."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from src.data.arrays import DigitArrays
from src.data.print_fonts import font_files
from src.data.synthetic import GENERATOR_VERSION, STYLES, generate_digits, generator_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> DigitArrays:
    """1,000 images: enough for the statistics to sit well inside their tolerances."""
    return generate_digits(100, [0, 0])


def _digest(data: DigitArrays) -> str:
    h = hashlib.sha256()
    for a in (data.images, data.labels, data.angles):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_same_seed_and_style_give_identical_arrays_in_another_process() -> None:
    code = (
        "from src.data.synthetic import STYLES, generate_digits\n"
        "from tests.test_synthetic import _digest\n"
        "print(*(_digest(generate_digits(3, [4, 2], style)) for style in STYLES))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [_digest(generate_digits(3, [4, 2], s)) for s in STYLES]


def test_different_seeds_give_different_images() -> None:
    a, b = generate_digits(3, [0, 0]), generate_digits(3, [0, 1])
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.angles, b.angles)


def test_every_class_appears_exactly_num_per_class_times_in_shuffled_order() -> None:
    data = generate_digits(7, 3)
    assert len(data) == 70
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), np.full(10, 7))
    assert not np.array_equal(data.labels, np.sort(data.labels))


def test_format_range_and_quantisation(digits: DigitArrays) -> None:
    x = digits.images
    assert x.dtype == np.float32 and x.shape == (1000, 1, 28, 28)
    assert digits.labels.dtype == np.int64 and digits.labels.shape == (1000,)
    assert x.min() == 0.0 and x.max() <= 1.0
    levels = x.astype(np.float64) * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    # No faint dust: every pixel is either exactly 0 or at least one grey level.
    assert x[x > 0].min() >= (1.0 - 1e-4) / 255.0
    assert (x == 0).mean() > 0.6
    assert digits.check("test") is digits


def test_no_ink_is_cut_by_the_frame(digits: DigitArrays) -> None:
    x = digits.images[:, 0]
    assert not x[:, [0, -1], :].any() and not x[:, :, [0, -1]].any()
    assert (x.reshape(len(x), -1).max(axis=1) > 0.5).all(), "an image lacks a visible digit"


def test_recorded_angle_is_the_rotation_in_the_image(digits: DigitArrays) -> None:
    """A 1 is one long stroke, so its principal axis shows the rotation: counter-clockwise for
    positive angles, as with MATLAB's imrotate."""
    ones = digits.images[digits.labels == 1, 0].astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    x, y = cols.astype(np.float64), 27.0 - rows  # y up, as on screen
    measured = []
    for im in ones:
        w = im.sum()
        dx, dy = x - (im * x).sum() / w, y - (im * y).sum() / w
        cov = np.array(
            [
                [(im * dx * dx).sum(), (im * dx * dy).sum()],
                [(im * dx * dy).sum(), (im * dy**2).sum()],
            ]
        )
        axis = np.linalg.eigh(cov)[1][:, 1]
        axis = axis if axis[1] >= 0 else -axis
        measured.append(np.degrees(np.arctan2(-axis[0], axis[1])))
    recorded = digits.angles[digits.labels == 1]
    assert np.corrcoef(recorded, measured)[0, 1] > 0.85
    assert np.median(np.abs(np.asarray(measured) - recorded)) < 8.0


def test_fonts_exist_in_matplotlib_and_exclude_broken_ones() -> None:
    fonts = font_files()
    assert len(fonts) >= 10
    assert all(f.is_file() for f in fonts)
    assert fonts == sorted(fonts)
    ttf_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    assert all(f.parent == ttf_dir for f in fonts)
    names = {f.name for f in fonts}
    # Old-style figures, symbol fonts and the placeholder-box font have no usable digits.
    assert names.isdisjoint({"cmmi10.ttf", "cmsy10.ttf", "cmex10.ttf", "LastResortHE-Regular.ttf"})
    assert any("Oblique" in n or "Ital" in n or n == "cmti10.ttf" for n in names)


def test_generator_settings_are_a_json_cache_key() -> None:
    settings = generator_settings()
    again = json.loads(json.dumps(settings))
    assert again == settings
    assert settings["generator_version"] == GENERATOR_VERSION
    assert settings["fonts"] == [f.name for f in font_files()]
    assert {"pillow", "matplotlib", "numpy"} <= set(settings["versions"])


def test_rejects_an_empty_request() -> None:
    with pytest.raises(ValueError, match="num_per_class"):
        generate_digits(0, 0)
