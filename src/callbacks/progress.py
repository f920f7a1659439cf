"""The terminal's training-progress line: epoch, iteration, loss and elapsed time."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


def hms(seconds: float) -> str:
    """MATLAB's duration(0,0,s,'Format','hh:mm:ss')."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressBar(TQDMProgressBar):
    """TQDM's bar (it shows the epoch) plus the global iteration and the elapsed training time."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        elapsed = items.pop("train/elapsed_s", None)
        items["iter"] = trainer.global_step
        if trainer.training and elapsed is not None:
            items["elapsed"] = hms(float(elapsed))
        return items
