"""Watching the batch-norm state: TensorBoard histograms and scalars, and the classic mistake."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from src.model.network import State
from src.model.state import clone_state, states_equal

log = logging.getLogger(__name__)

FROZEN_STATE_WARNING = (
    "after %d training iterations the batch-norm state (running mean and variance of "
    "%s) has not changed from its initial values, so the network will predict with statistics "
    "it never learned: the loop is not storing the new state (MATLAB: `dlnet.State = state`; "
    "here: model.update_state=%s)."
)


class BatchNormStateMonitor(L.Callback):
    """Every `trainer.log_every_n_steps` iterations, per batch-norm layer (tags `bn1/...`):

    - histograms `bn1/running_mean`, `bn1/running_var` of the 20 channels (TensorBoard only);
    - scalars `bn1/running_mean_avg`, `bn1/running_var_avg` (mean over channels),
      `bn1/batch_mean_gap` (RMS over channels of batch mean - running mean) and
      `bn1/batch_var_ratio` (mean over channels of batch variance / running variance), which show
      at a glance how far each mini-batch is from the state the network predicts with.

    After `check_after` iterations it warns once if the state has not moved from where it started.

    The values are computed on the device and recorded with the module's per-iteration values
    (`BNStateModule.record_vector`, `record_histogram`), which reach the loggers in blocks
    (`src/model/step_values.py`): nothing here waits for the GPU at an iteration.
    """

    def __init__(self, check_after: int = 5) -> None:
        self.check_after = check_after
        self._before: State | None = None
        self._at_start: State | None = None
        self._start_step = 0
        self._checked = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_start = clone_state(pl_module.net.state)
        self._start_step = trainer.global_step
        self._checked = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The state before this iteration, each layer's means and variances stacked (a copy).
        self._before = _stacked(pl_module.net.state) if self._due(trainer, 1) else None

    def _due(self, trainer: L.Trainer, ahead: int) -> bool:
        # The trainer's interval, not one of its own: Lightning re-sends a value logged with
        # self.log at every later flush, so a slower interval would draw stale points.
        return (trainer.global_step + ahead) % trainer.log_every_n_steps == 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._check_state_moved(trainer, pl_module)
        if self._before is None or not isinstance(outputs, dict) or "state" not in outputs:
            return
        # All layers at once (a handful of device operations, not dozens): rows are layers.
        names = list(pl_module.net.batch_norms())
        decay = pl_module.net.bn1.decay
        old_mean, old_var = self._before
        new_mean, new_var = _stacked(outputs["state"])
        mean, var = _stacked(pl_module.net.state)  # the stored state (unchanged if not carried)
        # The mini-batch statistics folded into the new state: s_new = (1-d)*s_old + d*s_batch.
        batch_mean = (new_mean - (1 - decay) * old_mean) / decay
        batch_var = (new_var - (1 - decay) * old_var) / decay
        values = torch.stack(
            [
                mean.mean(dim=1),
                var.mean(dim=1),
                (batch_mean - old_mean).pow(2).mean(dim=1).sqrt(),
                (batch_var / old_var).mean(dim=1),
            ]
        )  # 4 x layers
        keys = [f"{name}/{what}" for what in SCALARS for name in names]
        pl_module.record_vector(keys, values.flatten())
        if self._histograms_wanted(trainer):
            for i, name in enumerate(names):
                pl_module.record_histogram(f"{name}/running_mean", mean[i], copy=False)
                pl_module.record_histogram(f"{name}/running_var", var[i], copy=False)
        self._before = None

    @staticmethod
    def _histograms_wanted(trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and any(
            isinstance(logger, TensorBoardLogger) for logger in trainer.loggers
        )

    def _check_state_moved(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._checked or self._at_start is None or not pl_module.training:
            return
        done = trainer.global_step - self._start_step
        if done < self.check_after:
            return
        self._checked = True
        if states_equal(self._at_start, pl_module.net.state):
            layers = ", ".join(pl_module.net.batch_norms())
            update = getattr(pl_module, "update_state", "?")
            rank_zero_only(log.warning)(FROZEN_STATE_WARNING, done, layers, str(update).lower())


SCALARS = ("running_mean_avg", "running_var_avg", "batch_mean_gap", "batch_var_ratio")


def _stacked(state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """(running means, running variances), one row a layer: new tensors, copies of the state."""
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    return torch.stack(means), torch.stack(variances)
