"""`data.frame=true`: a photo of one digit written on paper, framed as the built-in digits are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.arrays import IMAGE_SIZE
from src.data.frame import BOX, frame_digit, frame_photo
from src.data.sources import decode_image, folder
from src.errors import DataError
from src.model.network import DigitsNet
from src.predict import predict
from tests.conftest import compose_config
from tests.test_sources import digits


def photo(digit: np.ndarray, seed: int, dark_on_light: bool = True) -> np.ndarray:
    """A 28x28 digit (light on black) as a photo: 7x larger, somewhere on a 300 x 240 sheet of
    paper with grain, dark ink on light paper unless told otherwise."""
    rng = np.random.default_rng(seed)
    big = Image.fromarray(digit.astype(np.float32), mode="F").resize((196, 196))
    ink = np.clip(np.asarray(big, dtype=np.float64), 0.0, 1.0)
    sheet = np.zeros((240, 300))
    top, left = rng.integers(0, 240 - 196), rng.integers(0, 300 - 196)
    sheet[top : top + 196, left : left + 196] = ink
    if dark_on_light:
        sheet = 0.88 - 0.75 * sheet
    else:
        sheet = 0.1 + 0.8 * sheet
    return np.clip(sheet + rng.normal(0.0, 0.03, sheet.shape), 0.0, 1.0)


def ink_box(image: np.ndarray, level: float = 0.3) -> tuple[int, int, float, float]:
    """Height, width and centre (row, column) of the pixels above `level`."""
    rows, cols = np.flatnonzero((image > level).any(axis=1)), np.flatnonzero((image > level).any(0))
    h, w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    return h, w, (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2


def test_framing_crops_scales_and_centres_and_a_photo_frames_like_its_digit() -> None:
    wide = np.zeros((40, 90))
    wide[10:30, 5:85] = 0.5  # 20 x 80 ink somewhere in the image
    out = frame_digit(wide)
    assert out.shape == (IMAGE_SIZE, IMAGE_SIZE) and out.dtype == np.float32
    assert out.max() == 1.0 and out.min() == 0.0
    np.testing.assert_array_equal(out, np.round(out * 255) / np.float32(255))
    h, w, cy, cx = ink_box(out, 0.5)
    assert w == BOX and 4 <= h <= 6  # the aspect ratio kept: 80 x 20 becomes 20 x 5
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    # a photo frames like the digit it shows
    data = digits(2, per_class=1)
    for i, digit in enumerate(data.images[:, 0]):
        want = frame_digit(digit)
        for dark in (True, False):
            got = frame_photo(photo(digit, i, dark_on_light=dark), f"photo{i}.png")
            assert got.shape == (IMAGE_SIZE, IMAGE_SIZE) and got.min() == 0.0
            # light ink on black whichever way round the photo was, the paper's grain gone
            assert (got[:2] == 0).all() and (got[-2:] == 0).all()
            assert (got[:, :2] == 0).all() and (got[:, -2:] == 0).all()
            assert ink_box(got)[:2] == pytest.approx(ink_box(want)[:2], abs=2)
            # the same strokes: a photo left unframed or the wrong way round correlates near 0
            assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.6
            assert ink_box(got)[2:] == pytest.approx(ink_box(want)[2:], abs=1.5)
    # a blank sheet is one line naming the file
    paper = np.clip(0.9 + np.random.default_rng(0).normal(0.0, 0.02, (200, 150)), 0.0, 1.0)
    with pytest.raises(DataError, match=r"^sheet\.png: no digit to frame \(data\.frame=true\)"):
        frame_photo(paper, "sheet.png")


def write_photo(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).convert("RGB").save(path)


def test_folder_source_frames_photos_of_any_size(tmp_path: Path) -> None:
    data = digits(3, per_class=1)
    for i, (digit, label) in enumerate(zip(data.images[:, 0], data.labels)):
        write_photo(tmp_path / "train" / str(label) / f"{i}.png", photo(digit, i))
        write_photo(tmp_path / "test" / str(label) / f"{i}.png", photo(digit, i + 50))
    train, test = folder(None, tmp_path, grayscale=True, frame=True)
    assert train.images.shape == test.images.shape == (10, 1, IMAGE_SIZE, IMAGE_SIZE)
    first = sorted((tmp_path / "train" / "0").iterdir())[0]
    want = decode_image(str(first), resize=False, grayscale=True, frame=True)
    np.testing.assert_array_equal(train.images[list(train.labels).index(0), 0], want)
    with pytest.raises(DataError, match="data.frame=true"):  # unframed, a photo is refused
        folder(None, tmp_path, grayscale=True)


def test_predict_frames_photos_on_request(
    ckpt: Path, net: DigitsNet, tmp_path: Path, cache_dir: Path
) -> None:
    data = digits(4, per_class=1)
    for i, digit in enumerate(data.images[:, 0]):
        write_photo(tmp_path / "photos" / f"{i}.jpg", photo(digit, i))
    run = tmp_path / "predict"
    overrides = [f"ckpt_path={ckpt}", f"images={tmp_path / 'photos'}", "data.grayscale=true"]
    result = predict(compose_config([*overrides, "data.frame=true"], run, cache_dir, "predict"))
    framed = np.stack([decode_image(f, False, True, True) for f in result["files"]])[:, None]
    with torch.no_grad():
        want = net(torch.from_numpy(framed)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(result["labels"], want)
