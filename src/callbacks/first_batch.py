"""The first training batch as a picture: what the network is actually shown, seen once."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from src.data.digit_stats import image_grid

log = logging.getLogger(__name__)


class FirstBatchGrid(L.Callback):
    """Writes the run's first training batch as an image grid: `first_batch.png` in the run
    folder and `train/first_batch` in TensorBoard. Once, on the main process, on the first
    batch only, so training pays nothing after it."""

    def __init__(self, filename: str = "first_batch.png", tag: str = "train/first_batch") -> None:
        self.filename = filename
        self.tag = tag
        self.done = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.done:
            return
        self.done = True
        if not trainer.is_global_zero:
            return
        from PIL import Image

        images = batch[0].detach().float().cpu().numpy()
        grid = image_grid(images, columns=math.ceil(math.sqrt(len(images))))
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, trainer.global_step, dataformats="HW")
        log.info("First training batch: %s", path)
