"""The source example's whole experiment, at full size: the accuracy it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.transfer import load_network, predict, sklearn_digits
from src.train import train
from tests.conftest import compose_config


@pytest.mark.slow
def test_full_experiment_reaches_the_examples_accuracy(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(["trainer=cpu"], tmp_path / "run", cache_dir)
    metrics = train(cfg)
    assert metrics["global_step"] == 195  # 5 epochs x floor(5000/128)
    assert metrics["test/acc"] >= 0.98  # MATLAB: 0.9948
    # Trained on built-in digits only, the network reads real handwriting: scikit-learn's 1,797
    # digits (benchmarks/transfer.py), 0.8392 here. Generator version 2 gave 0.7846, version 1
    # (print fonts) 0.6155: a generator that loses the handwriting falls below this line.
    images, labels = sklearn_digits()
    net = load_network(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert (predict(net, images) == labels).mean() >= 0.80
