"""`checkpoints/last.ckpt`, kept current while training, and the stops that must not lose it."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class RunStopped(Exception):
    """Training stopped on a signal; `path` is the checkpoint of the last completed iteration."""

    def __init__(self, signum: int, path: Path | None, iteration: int) -> None:
        self.signum, self.path, self.iteration = signum, path, iteration
        name = SIGNAL_NAMES.get(signum, f"signal {signum}")
        if path is None:
            super().__init__(f"{name} again: stopped at once without saving")
        else:
            super().__init__(f"{name}: stopped after iteration {iteration}; saved {path}")


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message names the iteration."""


class RunCheckpoint(Checkpoint):
    """Writes `last.ckpt` (atomically, through the trainer's checkpoint plugin):

    - at the end of every `every_n_epochs`-th epoch and of the last one;
    - every `every_n_train_steps` iterations when that is above 0;
    - after the current iteration when SIGINT or SIGTERM arrives, and then stops the run
      (`RunStopped`); a second SIGINT/SIGTERM stops at once without saving.

    It also stops the run (`TrainingDiverged`) at the first non-finite loss, before anything
    could save the broken weights, so `last.ckpt` stays the last good one.

    A `Checkpoint` subclass, so Lightning calls it after the other callbacks and after the
    module's epoch-end hook: what it saves includes their state for the same iteration.
    """

    def __init__(
        self, dirpath: str | Path, every_n_epochs: int = 1, every_n_train_steps: int = 0
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.last_path = self.dirpath / "last.ckpt"
        self._saved_at: int | None = None
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- saving ---------------------------------------------------------------------------------
    def save(self, trainer: L.Trainer) -> Path:
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full training state
        self._saved_at = trainer.global_step
        return self.last_path

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        broken = _non_finite(outputs, pl_module)
        if broken is not None:
            lr = _learning_rate(trainer)
            raise TrainingDiverged(
                f"training diverged: {broken} at iteration {trainer.global_step} (epoch "
                f"{trainer.current_epoch + 1}); the learning rate (optimizer.lr={lr:g}) is most "
                "likely too high for this network. Nothing was saved after the last good "
                f"checkpoint ({self._last_good()})"
            )
        if self._signal is not None:
            path = self.save(trainer)
            raise RunStopped(self._signal, path, trainer.global_step)
        every = self.every_n_train_steps
        last_of_epoch = i + 1 >= trainer.num_training_batches
        if every > 0 and trainer.global_step % every == 0 and not last_of_epoch:
            self.save(trainer)  # the epoch's last batch is saved by on_train_epoch_end

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        finished = trainer.max_epochs is not None and epochs_done >= trainer.max_epochs
        due = self.every_n_epochs > 0 and epochs_done % self.every_n_epochs == 0
        if due or finished or trainer.should_stop or _out_of_steps(trainer):
            self.save(trainer)

    def _last_good(self) -> str:
        return str(self.last_path) if self._saved_at is not None else "none was written yet"

    # -- signals ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own handlers (registered before training starts), so these
        # replace its SIGTERM handler, which would exit 0 with nothing saved. SLURM's requeue
        # signal (SIGUSR1) stays Lightning's.
        self._signal = None
        for signum in SIGNAL_NAMES:
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:  # asked twice: stop now, keep the last periodic checkpoint
            raise RunStopped(signum, None, -1)
        self._signal = signum
        log.warning(
            "%s received: finishing this iteration, then saving a checkpoint and stopping "
            "(send it again to stop at once without saving).",
            SIGNAL_NAMES[signum],
        )

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def state_dict(self) -> dict[str, Any]:
        return {"dirpath": str(self.dirpath), "saved_at": self._saved_at}


def _non_finite(outputs: Any, pl_module: L.LightningModule) -> str | None:
    """What went non-finite this iteration, the loss or the batch-norm state; None if nothing.

    The state counts too: with a large learning rate the loss can stay finite while the
    running variance overflows, and the network would then predict with infinities.
    """
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if loss is not None and not math.isfinite(float(loss)):
        return f"the loss is {float(loss)}"
    state = getattr(getattr(pl_module, "net", None), "state", {})
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            return f"the batch-norm state {key} is not finite"
    return None


def _out_of_steps(trainer: L.Trainer) -> bool:
    return 0 <= trainer.max_steps <= trainer.global_step


def _learning_rate(trainer: L.Trainer) -> float:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, AttributeError):
        return float("nan")
