"""Learning-rate schedules under manual optimization, and the callback that logs the rate.

The module (`BNStateModule`) steps its scheduler itself, at the interval its config names
(`scheduler.interval`): `step` after every optimizer update, `epoch` after every epoch.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor

from src.errors import ConfigError

INTERVALS = ("step", "epoch")

SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def iterations_per_epoch(trainer: L.Trainer) -> int:
    """The iterations an epoch of this run trains: the data module's training batches (this
    process's share under DDP), cut by `trainer.limit_train_batches` as Lightning cuts them.

    Read from the data module, not `trainer.estimated_stepping_batches`: that would build the
    trainer's training loader before a checkpoint restores its position, which then never
    reaches it (Lightning issue #20550), and a resumed run would start its epoch from the
    beginning."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "train_dataloader"):
        raise RuntimeError("a schedule over the whole run needs the run's data module")
    batches = len(dm.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(batches, limit)
    return int(batches * limit) if limit is not None else batches


def total_iterations(trainer: L.Trainer) -> int:
    """The iterations the whole run trains: `trainer.max_epochs` epochs, or fewer with
    `trainer.max_steps`."""
    epochs = trainer.max_epochs
    steps = trainer.max_steps
    total = math.inf
    if epochs is not None and epochs >= 0:
        total = epochs * iterations_per_epoch(trainer)
    if steps is not None and steps >= 0:
        total = min(total, steps)
    if not math.isfinite(total):
        raise ValueError(
            "a schedule over the whole run needs trainer.max_epochs or trainer.max_steps"
        )
    return max(int(total), 1)


def stops_early(trainer: L.Trainer) -> bool:
    """Whether a stop asked for (`should_stop`: EarlyStopping) ends training after this epoch:
    only once `min_epochs` and `min_steps` are met, as Lightning's fit loop decides."""
    epochs, steps = trainer.fit_loop.min_epochs, trainer.fit_loop.min_steps
    met = (not epochs or trainer.current_epoch + 1 >= epochs) and (
        not steps or trainer.global_step >= steps
    )
    return trainer.should_stop and met


def epoch_cut_short(trainer: L.Trainer) -> bool:
    """Whether this epoch ends before its last batch (`trainer.max_steps`)."""
    return (
        trainer.fit_loop.epoch_loop.batch_progress.current.completed < trainer.num_training_batches
    )


def takes_total_steps(factory: SchedulerFactory) -> bool:
    """Whether the factory is a partial whose `total_steps` argument (OneCycleLR) is unset."""
    if not isinstance(factory, functools.partial):
        return False
    try:
        params = inspect.signature(factory.func).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in params and factory.keywords.get("total_steps") is None


def build_scheduler(
    config: Mapping[str, Any] | None, optimizer: torch.optim.Optimizer, trainer: L.Trainer | None
) -> tuple[torch.optim.lr_scheduler.LRScheduler, str] | None:
    """(scheduler, interval) from the `scheduler` config (`interval` and the `scheduler`
    factory); None when the config selects none (`scheduler=none`).

    A factory with `total_steps` left null (OneCycleLR) is given the run's total number of
    iterations."""
    if not config or config.get("scheduler") is None:
        return None
    interval = str(config.get("interval", "epoch"))
    if interval not in INTERVALS:
        raise ValueError(f"scheduler.interval={interval!r} must be 'step' or 'epoch'")
    factory: SchedulerFactory = config["scheduler"]

    def whole_run(trainer: L.Trainer) -> int:  # the steps the schedule takes: iterations or epochs
        total = total_iterations(trainer)
        epochs = -(-total // max(iterations_per_epoch(trainer), 1))
        return max(1, epochs) if interval == "epoch" else total

    given = getattr(factory, "keywords", {}).get("total_steps")
    # OneCycleLR refuses to step past its total_steps, mid-run
    if given is not None and trainer is not None and given < (total := whole_run(trainer)):
        unit = "epochs" if interval == "epoch" else "iterations"
        raise ConfigError(
            f"scheduler.scheduler.total_steps={given} is fewer than the run's {total} {unit}, "
            f"past which the schedule cannot step: set it to null (the whole run) or at "
            f"least {total}"
        )
    if takes_total_steps(factory):
        if trainer is None:
            raise RuntimeError("a schedule over the whole run needs a trainer")
        return factory(optimizer, total_steps=whole_run(trainer)), interval
    return factory(optimizer), interval


class LearningRateMonitor(_LightningLearningRateMonitor):
    """Lightning's LearningRateMonitor (`lr-SGD`, `lr-Adam`, ... for each optimizer, whether a
    scheduler changes the rate or not), except that a run without a logger (`logger=none`)
    trains on without it instead of stopping, and that a single rate goes with the module's
    other per-iteration values (one TensorBoard event an iteration, src/model/step_block.py)."""

    _module_records = False

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers:
            return
        super().on_train_start(trainer, *args, **kwargs)
        module = trainer.lightning_module
        self._module_records = (
            hasattr(module, "lr_key")
            and len(trainer.optimizers) == 1
            and len(self.lrs) == 1
            and not self.log_momentum
            and not self.log_weight_decay
            and self.logging_interval != "epoch"
        )
        if self._module_records:  # noted with each iteration's row, under Lightning's own tag
            module.lr_key = next(iter(self.lrs))

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers and not self._module_records:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
