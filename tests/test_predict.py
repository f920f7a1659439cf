"""`python -m src.predict`: image files classified as the trained network itself classifies them;
with `data.frame=true`, a photo of one digit written on paper framed as the built-in digits are
(the folder source frames them too)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.arrays import IMAGE_SIZE
from src.data.frame import BOX, frame_digit, frame_photo
from src.data.sources import decode_image
from src.data.sources import folder as read_folder
from src.errors import DataError
from src.model.network import DigitsNet
from src.predict import predict
from tests.conftest import assert_one_line_error, cli_in_process, compose_config, read_csv
from tests.test_sources import as_uint8, digits, write_tree


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 digits as 8-bit PNGs in class folders: DIR/<label>/<index>.png."""
    root = tmp_path_factory.mktemp("images")
    write_tree(root, digits(1, per_class=2))
    return root


def predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """predictions.csv's files, predicted labels and probabilities; its columns checked."""
    rows = read_csv(path)
    assert list(rows[0]) == ["file", "predicted", *(f"prob_{k}" for k in range(10))]
    probs = np.array([[float(r[f"prob_{k}"]) for k in range(10)] for r in rows])
    return [r["file"] for r in rows], np.array([int(r["predicted"]) for r in rows]), probs


def test_predictions_are_the_networks_own(
    ckpt: Path, net: DigitsNet, folder: Path, tmp_path: Path, cache_dir: Path
) -> None:
    run = tmp_path / "predict"
    cfg = compose_config([f"ckpt_path={ckpt}", f"images={folder}"], run, cache_dir, "predict")
    result = predict(cfg)

    images = digits(1, per_class=2).images  # what the PNGs hold, in [0, 1]
    with torch.no_grad():
        want = net.predict(torch.from_numpy(images)).numpy()
    files, labels, probs = predictions(run / "predictions.csv")
    assert len(files) == len(images) == 20 and files == result["files"]
    order = [int(Path(f).stem) for f in files]  # each file is named by its index in `images`
    assert sorted(order) == list(range(20))
    np.testing.assert_array_equal(labels, want[order].argmax(axis=1))
    np.testing.assert_array_equal(result["labels"], labels)
    np.testing.assert_allclose(probs, want[order], rtol=1e-6, atol=1e-7)
    # the network is not constant: the check above would not notice a mix-up otherwise
    assert len(set(labels)) > 1 or np.ptp(probs, axis=0).max() > 1e-3
    assert (run / "config.yaml").is_file()


@pytest.mark.slow
def test_cli_reads_a_glob_and_converts_on_request(
    ckpt: Path, net: DigitsNet, folder: Path, tmp_path: Path, cache_dir: Path
) -> None:
    # a colour image twice the size, allowed by data.resize and data.grayscale
    big = tmp_path / "extra" / "big.png"
    big.parent.mkdir()
    gray = Image.fromarray(as_uint8(digits(1, per_class=2).images[0, 0])).resize((56, 56))
    gray.convert("RGB").save(big)
    run = tmp_path / "run"
    proc = cli_in_process(f"ckpt_path={ckpt}", f"images=[{folder}/3/*.png,{big}]",
                          "data.resize=true", "data.grayscale=true",
                          f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}",
                          module="src.predict")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    files, labels, _ = predictions(run / "predictions.csv")
    assert files == [*sorted(str(p) for p in (folder / "3").glob("*.png")), str(big)]
    with torch.no_grad():
        x = torch.from_numpy(decode_image(str(big), resize=True, grayscale=True))[None, None]
        assert labels[-1] == int(net.predict(x).argmax())
    output = proc.stdout + proc.stderr
    assert "predicted  probability" in output and f"({len(files)} images)" in output
    assert (run / "predict.log").read_text().count("predicted  probability") == 1


@pytest.mark.parametrize(
    ("images", "extra", "needles"),
    [
        ("{tmp}/nowhere", [], ["images={tmp}/nowhere", "no such file or folder"]),
        ("{folder}/*.jpg", [], ["images={folder}/*.jpg", "no files match"]),
        ("{tmp}/empty", [], ["images={tmp}/empty", "holds no files"]),
        ("{tmp}/wide.png", [], ["wide.png", "30x28", "data.resize=true"]),
        ("{tmp}/notes.txt", [], ["notes.txt", "cannot be read as an image"]),
        ("{tmp}/rgb.png", [], ["rgb.png", "data.grayscale=true"]),
        ("{folder}", ["+data.root=x"], ["data.root", "data.resize and data.grayscale"]),
        # was "a new key is added with +data.batch_size=0", which then was refused
        ("{folder}", ["data.batch_size=0"], ["data.batch_size=0: predict takes only data.resize"]),
        ("{folder}", ["ckpt_path={tmp}/none.ckpt"], ["ckpt_path={tmp}/none.ckpt"]),
        ("{tmp}/blank.png", ["data.frame=maybe"], ["data.frame"]),
        ("{tmp}/blank.png", ["data.frame=true"], ["blank.png", "no digit"]),
        ("{folder}", ["model.bn_stats=0"], ["model.bn_stats=0 must be one of", "population"]),
        ("[]", [], ["images is not set"]),
        ("{folder}", ["ckpt_path={tmp}"], ["ckpt_path={tmp}: is a folder"]),
        # population statistics are computed over the checkpoint's training images: was a line
        # with no remedy, after an empty run folder
        ("{folder}", ["ckpt_path={tmp}/moved.ckpt", "model.bn_stats=population"],
         ["{tmp}/moved: no such folder (data.root)", "put them back there, or use "
          "model.bn_stats=running"]),
        ("{tmp}/pipes", [], ["{tmp}/pipes/pipe.png: is not a regular file"]),  # was read forever
    ],
    ids="missing glob empty size text colour key unadded ckpt frame blank stats none folder moved "
    "pipe".split(),
)  # fmt: skip
def test_bad_input_is_one_line_and_no_run_folder(
    ckpt: Path, folder: Path, tmp_path: Path, images: str, extra: list[str], needles: list[str]
) -> None:
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "pipes").mkdir()
    os.mkfifo(tmp_path / "pipes" / "pipe.png")
    Image.fromarray(np.full((90, 60), 230, np.uint8)).save(tmp_path / "blank.png")  # paper only
    saved = torch.load(ckpt, weights_only=True)  # its training data moved since
    saved["config"]["data"] = {"source": "folder", "root": str(tmp_path / "moved"),
                               "batch_size": 32}  # fmt: skip
    torch.save(saved, tmp_path / "moved.ckpt")
    run = tmp_path / "run"
    fill = {"tmp": tmp_path, "folder": folder}
    args = [f"ckpt_path={ckpt}", f"images={images.format(**fill)}", f"hydra.run.dir={run}"]
    proc = cli_in_process(*args, *(e.format(**fill) for e in extra), module="src.predict")
    assert_one_line_error(proc, *(n.format(**fill) for n in needles), code=2)
    assert not run.exists()


# ---------------------------------------------------------------------------------------------
# data.frame=true: photos of digits


def photo(digit: np.ndarray, seed: int, dark_on_light: bool = True) -> np.ndarray:
    """A 28x28 digit (light on black) as a photo: 7x larger, somewhere on a 300 x 240 sheet of
    paper with grain, dark ink on light paper unless told otherwise."""
    rng = np.random.default_rng(seed)
    big = Image.fromarray(digit.astype(np.float32), mode="F").resize((196, 196))
    ink = np.clip(np.asarray(big, dtype=np.float64), 0.0, 1.0)
    sheet = np.zeros((240, 300))
    top, left = rng.integers(0, 240 - 196), rng.integers(0, 300 - 196)
    sheet[top : top + 196, left : left + 196] = ink
    sheet = 0.88 - 0.75 * sheet if dark_on_light else 0.1 + 0.8 * sheet
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
    # a blank sheet, its paper's grain included, is one line naming the file
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
    train, test = read_folder(None, tmp_path, grayscale=True, frame=True)
    assert train.images.shape == test.images.shape == (10, 1, IMAGE_SIZE, IMAGE_SIZE)
    first = sorted((tmp_path / "train" / "0").iterdir())[0]
    want = decode_image(str(first), resize=False, grayscale=True, frame=True)
    np.testing.assert_array_equal(train.images[list(train.labels).index(0), 0], want)
    with pytest.raises(DataError, match="data.frame=true"):  # unframed, a photo is refused
        read_folder(None, tmp_path, grayscale=True)


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


def test_a_photo_of_many_megapixels_is_read_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow warns of a decompression bomb past 89 megapixels, which a phone's photo has
    (printed twice, raw); its limit lowered here to below this photo's 72,000 pixels."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # an error only past twice that
    write_photo(tmp_path / "p.jpg", photo(digits(4, per_class=1).images[0, 0], 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(str(tmp_path / "p.jpg"), False, True, True).shape == (28, 28)


def test_a_phone_photo_stored_sideways_is_read_upright(tmp_path: Path) -> None:
    """Phones store a photo as the sensor saw it with an EXIF orientation tag that viewers
    follow: read as stored, a 3 was predicted 8."""
    upright = photo(digits(4, per_class=1).images[3, 0], 3)
    write_photo(tmp_path / "upright.png", upright)
    sideways = Image.fromarray(np.round(np.rot90(upright, -1) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation: turn 90 degrees anticlockwise to view
    sideways.convert("RGB").save(tmp_path / "sideways.png", exif=exif)
    read = [
        decode_image(str(tmp_path / f), False, True, True) for f in ("upright.png", "sideways.png")
    ]
    np.testing.assert_array_equal(read[0], read[1])
