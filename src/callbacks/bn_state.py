"""Watching the batch-norm state: TensorBoard histograms and scalars, and the classic mistake."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from src.model.network import State
from src.model.state import clone_state, states_equal

log = logging.getLogger(__name__)

FROZEN_STATE_WARNING = (
    "after %d training iterations the batch-norm state (running mean and variance of "
    "%s) has not changed from %s, so the network will predict with statistics "
    "it never learned: the loop is not storing the new state (MATLAB: `dlnet.State = state`; "
    "here: model.update_state=%s)."
)


class BatchNormStateMonitor(L.Callback):
    """Per batch-norm layer (tags `bn1/...`), for every iteration the loggers receive
    (`trainer.log_every_n_steps`):

    - histograms `bn1/running_mean`, `bn1/running_var` of the 20 channels (TensorBoard only);
    - scalars `bn1/running_mean_avg`, `bn1/running_var_avg` (mean over channels),
      `bn1/batch_mean_gap` (RMS over channels of batch mean - running mean) and
      `bn1/batch_var_ratio` (mean over channels of batch variance / running variance), which show
      at a glance how far each mini-batch is from the state the network predicts with.

    After `check_after` iterations it warns once if the state has not moved from where it started.

    The values come from the rows the module writes at every iteration anyway (the loss and the
    new state, `src/model/step_block.py`) and are derived when a block of them reaches the host:
    watching costs the training step nothing, and nothing here waits for the GPU.
    """

    def __init__(self, check_after: int = 5) -> None:
        self.check_after = check_after
        self._at_start: State | None = None
        self._start_step = 0
        self._checked = True  # until training starts

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if hasattr(pl_module, "watch_state"):
            pl_module.watch_state = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_start = clone_state(pl_module.net.state)
        self._start_step = trainer.global_step
        self._checked = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if self._checked:  # every iteration but the first `check_after`: nothing to do
            return
        done = trainer.global_step - self._start_step
        if done < self.check_after:
            return
        self._checked = True
        if states_equal(self._at_start, pl_module.net.state):
            layers = ", ".join(pl_module.net.batch_norms())
            update = getattr(pl_module, "update_state", "?")
            start = "the checkpoint's it resumed from" if self._start_step else "its initial values"
            warn = rank_zero_only(log.warning)
            warn(FROZEN_STATE_WARNING, done, layers, start, str(update).lower())
