"""The source example's whole experiment, at full size: the accuracy it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.train import train
from tests.conftest import compose_config


@pytest.mark.slow
def test_full_experiment_reaches_the_examples_accuracy(tmp_path: Path, cache_dir: Path) -> None:
    cfg = compose_config(["trainer=cpu"], tmp_path / "run", cache_dir)
    metrics = train(cfg)
    assert metrics["global_step"] == 195  # 5 epochs x floor(5000/128)
    assert metrics["test/acc"] >= 0.98  # MATLAB: 0.9948
