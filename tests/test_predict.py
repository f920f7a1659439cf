"""`python -m src.predict`: image files classified as the trained network itself classifies them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.sources import decode_image
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
        logits = net(torch.from_numpy(images)).numpy()
    files, labels, probs = predictions(run / "predictions.csv")
    assert len(files) == len(images) == 20 and files == result["files"]
    order = [int(Path(f).stem) for f in files]  # each file is named by its index in `images`
    assert sorted(order) == list(range(20))
    np.testing.assert_array_equal(labels, want[order].argmax(axis=1))
    np.testing.assert_array_equal(labels, logits[order].argmax(axis=1))
    np.testing.assert_array_equal(result["labels"], labels)
    np.testing.assert_allclose(probs, want[order], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
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
        ("{folder}", ["ckpt_path={tmp}/none.ckpt"], ["ckpt_path={tmp}/none.ckpt"]),
        ("{tmp}/blank.png", ["data.frame=maybe"], ["data.frame"]),
        ("{tmp}/blank.png", ["data.frame=true"], ["blank.png", "no digit"]),
    ],
    ids=["missing", "glob", "empty", "size", "text", "colour", "key", "ckpt", "frame", "blank"],
)
def test_bad_input_is_one_line_and_no_run_folder(
    ckpt: Path, folder: Path, tmp_path: Path, images: str, extra: list[str], needles: list[str]
) -> None:
    Image.fromarray(np.zeros((30, 28), np.uint8)).save(tmp_path / "wide.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.full((90, 60), 230, np.uint8)).save(tmp_path / "blank.png")  # paper only
    run = tmp_path / "run"
    fill = {"tmp": tmp_path, "folder": folder}
    args = [f"ckpt_path={ckpt}", f"images={images.format(**fill)}", f"hydra.run.dir={run}"]
    proc = cli_in_process(*args, *(e.format(**fill) for e in extra), module="src.predict")
    assert_one_line_error(proc, *(n.format(**fill) for n in needles), code=2)
    assert not run.exists()
