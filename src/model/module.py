"""The example's custom training loop as a LightningModule with manual optimization."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from src.model.network import DigitsNet

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class BNStateModule(L.LightningModule):
    """Trains `DigitsNet` one mini-batch at a time, carrying its batch-norm state explicitly."""

    def __init__(
        self,
        num_classes: int = 10,
        num_filters: int = 20,
        bn_decay: float = 0.1,
        bn_epsilon: float = 1e-5,
        update_state: bool = True,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__()
        # The optimizer factory is not a hyperparameter a checkpoint can rebuild; the run's
        # resolved config records it.
        self.save_hyperparameters(ignore=["optimizer"])
        self.automatic_optimization = False  # the loop below is MATLAB's, line for line
        self.net = DigitsNet(num_classes, num_filters, bn_decay, bn_epsilon)
        self.optimizer_factory = optimizer
        self.update_state = update_state
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._elapsed_before = 0.0  # seconds trained before a resume
        self._start: float | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and getattr(dm, "mean_image", None) is not None:
            # imageInputLayer('Mean', mean(XTrain,4)); a resumed checkpoint overwrites it.
            self.net.input.mean.copy_(dm.mean_image)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:  # MATLAB's sgdmupdate defaults
            return torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        return self.optimizer_factory(self.net.parameters())

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (logits) with the stored state, as `predict` uses it."""
        return self.net(x)

    # -- the training loop ------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        """Seconds of training so far, across resumes (the example's `toc(start)`)."""
        running = 0.0 if self._start is None else time.monotonic() - self._start
        return self._elapsed_before + running

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        opt = self.optimizers()
        # [dlYPred, state] = forward(dlnet, dlX): scores and the new state; nothing stored yet.
        scores, state = self.net.forward_with_state(x, self.net.state)
        # loss = crossentropy(dlYPred, Y)
        loss = F.cross_entropy(scores, y)
        # gradients = dlgradient(loss, dlnet.Learnables)
        opt.zero_grad()
        self.manual_backward(loss)
        # dlnet.State = state
        if self.update_state:
            self.net.state = state
        # [dlnet, velocity] = sgdmupdate(dlnet, gradients, velocity, learnRate, momentum)
        opt.step()

        # The training-progress plot: loss per iteration, the epoch and the elapsed time.
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=len(y))
        self.log("train/elapsed_s", self.elapsed(), on_step=True, prog_bar=True, batch_size=len(y))
        return loss.detach()

    # -- test ---------------------------------------------------------------------------------
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_acc(self.net(x), y)
        self.log("test/acc", self.test_acc, on_epoch=True, batch_size=len(y))

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.net.predict(batch[0])

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["elapsed_s"] = self.elapsed()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
