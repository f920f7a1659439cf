"""benchmarks/transfer.py: real handwritten digits (scikit-learn's) read by a checkpoint."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.transfer import SIDE, main, real_baseline, sklearn_digits, to_28x28
from tests.test_sources import write_idx


def test_digits_are_upscaled_to_centred_28x28_in_the_unit_range_keeping_the_aspect() -> None:
    images, labels = sklearn_digits()
    assert images.shape == (1797, 1, SIDE, SIDE) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert images.min() == 0.0 and images.max() == 1.0
    x = images[:, 0]
    # A margin like the generated digits': nothing in the outer 3 pixels.
    assert not x[:, :3].any() and not x[:, -3:].any()
    assert not x[:, :, :3].any() and not x[:, :, -3:].any()
    # the aspect ratio kept
    bar = np.zeros((8, 8))
    bar[:, 3:5] = 16.0  # 8 tall, 2 wide
    ink = to_28x28(bar) > 0.5
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert 18 <= len(rows) <= 21 and 4 <= len(cols) <= 7


@pytest.mark.slow
def test_real_baseline_trains_on_each_real_source_and_reads_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.data.sources import builtin

    # The built-in test set each network also reads, 50 images a class instead of the default
    # run's 500: what it reads of it is only listed here, and predicting 2 x 5,000 images was
    # a fifth of this test's time.
    generate = builtin.synthetic
    monkeypatch.setattr(builtin, "synthetic", lambda cache, seed: generate(cache, seed, 50, 50))
    # MNIST files holding scikit-learn's own digits: the network trained on them must read
    # scikit-learn's digits as well as the one trained on four fifths of them does.
    images, labels = sklearn_digits()
    pixels = np.round(images[:, 0] * 255)
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", pixels, 2051)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels, 2049)
    rows = dict(real_baseline(tmp_path, seed=0))
    assert list(rows) == ["sklearn", "mnist"]
    for read in rows.values():
        assert set(read) == {"sklearn", "mnist", "built-in"}
    assert rows["sklearn"]["sklearn"] >= 0.9  # the unseen fifth of its own source
    assert rows["mnist"]["sklearn"] >= 0.9  # it trained on these very digits
    assert rows["mnist"]["mnist"] >= 0.9


def test_the_script_prints_an_accuracy_and_bad_arguments_files_and_folders_are_one_line(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Through `main`, what the script's command line runs, in this process."""
    monkeypatch.setattr(sys, "argv", ["benchmarks/transfer.py"])  # argparse's program name
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # main's, for its own process
    assert main([str(ckpt)]) == 0  # the script's exit status
    out = capsys.readouterr().out
    found = re.search(r"sklearn digits: 1797 images, accuracy (\d\.\d{4})", out)
    assert found, out
    per_class = out.splitlines()[-1].split()
    assert per_class[0] == "accuracy" and len(per_class) == 11
    missing = str(tmp_path / "missing")
    cases = {
        (): "give a checkpoint, or --real-baseline",
        ("x.ckpt", "--real-baseline"): "give a checkpoint, or --real-baseline",
        ("x.ckpt", "--mnist", "dir"): "--mnist goes with --real-baseline",
        (missing + ".ckpt",): missing + ".ckpt",
        ("--real-baseline", "--mnist", missing): missing,
    }
    for args, named in cases.items():
        with pytest.raises(SystemExit) as stop:
            main(list(args))
        stderr = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("transfer.py: error: ") and named in last
