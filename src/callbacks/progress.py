"""The training-progress display: epoch (counted from 1), iteration, loss and elapsed time.

In a terminal, TQDM's live bar. Anywhere else (`make train > run.log`, a cluster or sweep job, a
pipe), no bar and no carriage returns: a plain log line at the end of every epoch, and every
`every_n_iterations` iterations if that is above 0:

    [...][src.callbacks.progress][INFO] - Epoch 1/5, iteration 39/195: loss 0.2162, elapsed 00:00:03

The same lines go to the run's `train.log` in a terminal too. Nothing here reads a value back
from the device: the loss and elapsed time come as host floats from the module's `latest`
(written out a block of iterations at a time) or from Lightning's progress-bar metrics.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from src.console import is_terminal, log_to_files

log = logging.getLogger(__name__)

SHOWN = ("train/loss", "train/elapsed_s")  # the bar's own items; other metrics follow them


def hms(seconds: float) -> str:
    """MATLAB's duration(0,0,s,'Format','hh:mm:ss')."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def epoch_number(trainer: L.Trainer) -> int:
    """The epoch a person reads, counted from 1: the one under way, or after training the last
    one that ran, even if it stopped part-way. (`trainer.current_epoch` counts completed epochs:
    0 during the first one, and already 5 once a 5-epoch run has ended.)"""
    return max(trainer.fit_loop.epoch_progress.current.started, 1)


def _host_float(value: Any) -> float | None:
    """`value` as a float if it is on the host already; None for a value on a device (reading
    it would wait for the device) or anything that is not a single number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    device = getattr(value, "device", None)
    if device is not None and device.type == "cpu" and value.numel() == 1:
        return float(value)
    return None


def progress_values(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
    """The loss, the elapsed seconds and any other progress-bar metric, as host floats: the
    module's `latest` first, then Lightning's progress-bar metrics, then (elapsed time only)
    the module's clock."""
    latest = getattr(pl_module, "latest", None)
    own = [(k, v) for k, v in latest.items() if k in SHOWN] if isinstance(latest, Mapping) else []
    values: dict[str, float] = {}
    for key, value in [*own, *trainer.progress_bar_metrics.items()]:
        if key not in values and (host := _host_float(value)) is not None:
            values[key] = host
    if "train/elapsed_s" not in values and callable(getattr(pl_module, "elapsed", None)):
        values["train/elapsed_s"] = float(pl_module.elapsed())
    return values


class ProgressBar(TQDMProgressBar):
    """TQDM's bar in a terminal (`Epoch 2/5`, the global iteration, the loss, the elapsed
    training time); plain log lines elsewhere (see the module's docstring).

    `plain`: null chooses by whether standard output is a terminal; true or false forces it.
    `every_n_iterations`: a plain line also every N iterations (0: at epoch ends only); each
    such line copies the module's pending values to the host once.
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        plain: bool | None = None,
        every_n_iterations: int = 0,
    ) -> None:
        super().__init__(refresh_rate, process_position, leave)
        if every_n_iterations < 0:
            raise ValueError(f"every_n_iterations={every_n_iterations} must be 0 or more")
        self.plain = not is_terminal(sys.stdout) if plain is None else bool(plain)
        self.every_n_iterations = every_n_iterations
        self._total_iterations: int | None = None

    @property
    def is_enabled(self) -> bool:  # no bar at all for plain output (every TQDM hook skips it)
        return super().is_enabled and not self.plain

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        for key in ("v_num", *SHOWN):
            items.pop(key, None)
        values = progress_values(trainer, pl_module)
        shown: dict[str, Any] = {}
        if "train/loss" in values:
            shown["loss"] = values["train/loss"]
        shown["iter"] = trainer.global_step
        if trainer.training and "train/elapsed_s" in values:
            shown["elapsed"] = hms(values["train/elapsed_s"])
        return {**shown, **items}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        total = trainer.estimated_stepping_batches
        self._total_iterations = int(total) if total != float("inf") else None

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        if self.is_enabled:  # Lightning's description counts epochs from 0
            self.train_progress_bar.set_description(self._epoch(trainer, trainer.current_epoch + 1))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, i)  # no bar: nothing
        n = self.every_n_iterations
        if n and trainer.global_step % n == 0 and i + 1 < trainer.num_training_batches:
            self._line(trainer, pl_module)  # the epoch's last iteration gets its epoch line

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(trainer, pl_module)
        super().on_train_epoch_end(trainer, pl_module)

    def on_exception(self, *_: Any) -> None:
        # End the live bars' line now, so the error printed next starts a line of its own.
        for bar in (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar,
                    self._predict_progress_bar):  # fmt: skip
            if bar is not None:
                bar.close()

    def _epoch(self, trainer: L.Trainer, epoch: int) -> str:
        last = trainer.max_epochs
        return f"Epoch {epoch}/{last}" if last is not None and last > 0 else f"Epoch {epoch}"

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One plain progress line: to the terminal and train.log, or to train.log only when
        the terminal shows the bar. Rank 0 only (Lightning disables the others' bars)."""
        if not self._enabled:
            return
        flush = getattr(pl_module, "flush_step_values", None)
        if callable(flush):  # the values of the iterations not written out yet
            flush()
        values = progress_values(trainer, pl_module)
        total = f"/{self._total_iterations}" if self._total_iterations else ""
        epoch = self._epoch(trainer, epoch_number(trainer))
        line = f"{epoch}, iteration {trainer.global_step}{total}"
        parts = []
        if "train/loss" in values:
            parts.append(f"loss {values.pop('train/loss'):.4f}")
        if "train/elapsed_s" in values:
            parts.append(f"elapsed {hms(values.pop('train/elapsed_s'))}")
        parts += [f"{key} {value:.4g}" for key, value in values.items()]
        if parts:
            line += ": " + ", ".join(parts)
        if self.plain:
            log.info(line)
        else:
            log_to_files(log, logging.INFO, line)
