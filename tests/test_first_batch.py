"""The first training batch is written once as a picture: first_batch.png and train/first_batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from src.reports import figures
from tests.conftest import TINY, compose_config, tb_events


def test_first_batch_grid_is_written_once(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    from src.train import train

    run = tmp_path / "run"
    calls: list[int] = []
    original = figures.first_batch

    def counting(trainer, module) -> None:
        calls.append(module.global_step)
        original(trainer, module)

    monkeypatch.setattr(figures, "first_batch", counting)
    # 200 images in batches of 32: 6 iterations an epoch, two epochs.
    train(compose_config([*TINY, "trainer.max_epochs=2", "test=false"], run, cache_dir))
    assert calls == [12]  # once, after training, not at every iteration

    grid = np.asarray(Image.open(run / "first_batch.png"))
    assert grid.dtype == np.uint8 and grid.shape == (6 * 29 + 1, 6 * 29 + 1)  # 32 images, 6 a row
    assert grid.max() > 128  # digits, not a blank picture

    events = tb_events(run / "tensorboard")
    assert "train/first_batch" in events.Tags()["images"]
    images = events.Images("train/first_batch")
    assert len(images) == 1 and images[0].step == 0
