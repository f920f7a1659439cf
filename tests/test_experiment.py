"""The source example's whole experiment, at full size: the accuracy it promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.transfer import load_network, photo_accuracies, predict, sklearn_digits
from src.train import train
from tests.conftest import compose_config


@pytest.mark.slow
def test_full_experiment_reaches_the_examples_accuracy(tmp_path: Path, cache_dir: Path) -> None:
    # Two threads, as the README's figures were measured. The result moves with the thread
    # count (0.9796 with one thread, 0.9802 with two, 0.9788 with three) and with the seed
    # (0.9786 with seed=1, 0.9822 with seed=2; 0.9786 to 0.9822 over seeds 0-7), so the line
    # sits below that spread, where another CPU's arithmetic does not decide it.
    cfg = compose_config(["trainer=cpu", "num_threads=2"], tmp_path / "run", cache_dir)
    threads = torch.get_num_threads()
    try:
        metrics = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert metrics["global_step"] == 195  # 5 epochs x floor(5000/128)
    assert metrics["test/acc"] >= 0.97  # MATLAB: 0.9948
    # Trained on built-in digits only, the network reads real handwriting: scikit-learn's 1,797
    # digits (benchmarks/transfer.py), 0.8392 here. Generator version 2 gave 0.7846, version 1
    # (print fonts) 0.6155: a generator that loses the handwriting falls below this line.
    images, labels = sklearn_digits()
    net = load_network(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert (predict(net, images) == labels).mean() >= 0.80
    # The same digits as photos (dark ink on grainy paper, somewhere on a larger sheet), read as
    # `python -m src.predict ... data.frame=true` reads them: 0.8175 on the first 400 here.
    # Resized whole instead (data.resize=true), the network reads them at chance, 0.0925.
    read = photo_accuracies(net)
    assert read["framed (data.frame=true)"] >= 0.75
    assert read["resized whole (data.resize=true)"] <= 0.3
