"""`checkpoints/last.ckpt`, kept current while training, and the stops that must not lose it."""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from src.compat import is_script_launcher
from src.errors import SIGNAL_NAMES, RunStopped, TrainingDiverged, handled_signals, keep_checkpoint
from src.model.module import VALIDATION_METRICS
from src.model.schedulers import epoch_cut_short, stops_early

log = logging.getLogger(__name__)


class RunCheckpoint(Checkpoint):
    """Writes `last.ckpt` (atomically, through the trainer's checkpoint plugin):

    - at the end of every `every_n_epochs`-th epoch and of the last one;
    - every `every_n_train_steps` iterations when that is above 0;
    - after the current iteration when SIGINT or SIGTERM arrives, and then stops the run
      (`RunStopped`); at an epoch's last iteration, once the epoch's end (validation, the
      schedule's step) has run, as the epoch's own checkpoint; a second SIGINT/SIGTERM stops at
      once without saving.

    It also stops the run (`TrainingDiverged`) when the loss or the state goes non-finite, before
    anything could save the broken weights, so `last.ckpt` stays the last good one. The module
    finds that when it writes out a block of per-iteration values (`BNStateModule.non_finite`);
    every save writes the block out first, so no broken weights are ever saved, and the message
    names the first broken iteration, although the run may stop a few iterations after it.

    A `Checkpoint` subclass, so Lightning calls it after the other callbacks and after the
    module's epoch-end hook: what it saves includes their state for the same iteration.

    Under DDP every process runs it, and after each iteration the processes agree (one small
    all-reduce) on whether any of them received a signal or saw a non-finite value: all of them
    then save (rank 0 writes) and stop together, never one alone, which would leave the others
    waiting in a collective forever. A signal sent to the main process only (`kill PID`) is
    enough: the agreement carries it to the others, so it is not forwarded (Ctrl-C, which the
    terminal sends to every process, would otherwise count twice). A second signal stops the
    main process at once and kills the processes it launched.
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
        self._stop_after_epoch = 0  # the signal the processes agreed on at an epoch's last batch
        self._previous_handlers: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None
        self._restored: dict[str, Any] = {}  # this callback's state in the resumed checkpoint
        self._trained = False  # whether this fit trained (else it resumed at the run's end)

    # -- saving ---------------------------------------------------------------------------------
    def save(self, trainer: L.Trainer) -> Path:
        """Write `last.ckpt` unless any process's values went non-finite since the last check
        (then stop the run; every process calls this)."""
        pl_module = trainer.lightning_module
        if hasattr(pl_module, "flush_step_values"):  # the iterations not written out yet
            pl_module.flush_step_values()
        broken = _non_finite(None, pl_module)
        if self._agree(trainer, 0, broken is not None)[1]:
            self._diverged(trainer, broken)
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full training state
        self._saved_at = trainer.global_step
        return self.last_path

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        broken = _non_finite(outputs, pl_module)
        signum, diverged = self._agree(trainer, self._signal or 0, broken is not None)
        if signum and self._signal is None:
            self._signal = signum  # another process received it
        if diverged:
            self._diverged(trainer, broken)
        # What the processes agreed on, not this one's flag: a signal handled just after the
        # all-reduce returned (it arrives while this process waits in it) would otherwise stop
        # this process alone, and the others would wait for it in a collective forever. It is
        # agreed on at the next iteration.
        last_of_epoch = i + 1 >= trainer.num_training_batches
        if signum and last_of_epoch:  # the epoch's end (validation, the schedule's step) is
            self._stop_after_epoch = signum  # part of its checkpoint: saved, then stopped there
        elif signum:
            path = self.save(trainer)
            _outlive_the_launcher(trainer)
            raise RunStopped(self._signal, path, trainer.global_step)
        every = self.every_n_train_steps
        if every > 0 and trainer.global_step % every == 0 and not last_of_epoch:
            self.save(trainer)  # the epoch's last batch is saved by on_train_epoch_end

    def _diverged(self, trainer: L.Trainer, broken: str | None) -> None:
        broken = broken or "a non-finite value in another process"
        lr = _learning_rate(trainer)
        _outlive_the_launcher(trainer)
        raise TrainingDiverged(
            f"training diverged: {broken} (epoch {trainer.current_epoch + 1}); the learning "
            f"rate (optimizer.lr={lr:g}) is most likely too high for this network. Nothing was "
            f"saved after the last good checkpoint ({self._last_good()})"
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs_done = trainer.current_epoch + 1
        finished = trainer.max_epochs is not None and epochs_done >= trainer.max_epochs
        due = self.every_n_epochs > 0 and epochs_done % self.every_n_epochs == 0
        ended = finished or stops_early(trainer) or _out_of_steps(trainer)
        if ended and hasattr(pl_module, "end_training"):  # a callback's stop (EarlyStopping)
            pl_module.end_training()  # comes after the module's epoch end: its final state
        # A signal during the epoch's end (its validation) stops here too, not an iteration on.
        stop = self._stop_after_epoch or self._agree(trainer, self._signal or 0, False)[0]
        self._signal = self._signal or stop or None
        if due or ended or stop:
            self.save(trainer)
        if stop and not ended:  # else training is over: on_train_end says so
            _outlive_the_launcher(trainer)
            raise RunStopped(stop, self.last_path, trainer.global_step)

    @staticmethod
    def _agree(trainer: L.Trainer, signum: int, broken: bool) -> tuple[int, bool]:
        """(a signal any process received, whether any process saw a non-finite value): the same
        answer on every process, from one all-reduce; this process's own with one process."""
        if trainer.world_size <= 1:
            return signum, broken
        flags = torch.tensor([signum, int(broken)], device=trainer.strategy.root_device)
        flags = trainer.strategy.reduce(flags, reduce_op="max")
        return int(flags[0]), bool(flags[1])

    def _last_good(self) -> str:
        return str(self.last_path) if self._saved_at is not None else "none was written yet"

    # -- signals ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own handlers (registered before training starts), so these
        # replace its SIGTERM handler, which would exit 0 with nothing saved. SLURM's requeue
        # signal (SIGUSR1) stays Lightning's. SIGINT stays ignored where the process started so.
        self._signal, self._stop_after_epoch = None, 0
        self._trainer = trainer
        self._trained = True
        for signum in handled_signals():
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None:  # asked twice: stop now, keep the last periodic checkpoint
            self._kill_launched_processes()
            saved = self.last_path if self._saved_at is not None else None  # to resume from
            raise RunStopped(signum, saved, self._saved_at or -1, again=True)
        self._signal = signum
        log.warning(
            "%s received: finishing this iteration, then saving a checkpoint and stopping "
            "(send it again to stop at once without saving).",
            SIGNAL_NAMES[signum],
        )

    def _kill_launched_processes(self) -> None:
        """The processes Lightning's launcher started from this one (DDP), if any: killed, as
        Lightning does on Ctrl-C, since they would wait for this one forever."""
        launcher = getattr(getattr(self._trainer, "strategy", None), "launcher", None)
        if is_script_launcher(launcher) and launcher.procs:
            launcher.kill(signal.SIGKILL)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        done = self._saved_at == trainer.global_step
        if self._signal is not None:  # came after the last iteration: at its save, or figures
            path = self.last_path if done else self.save(trainer)
            raise RunStopped(self._signal, path, trainer.global_step)
        keep_checkpoint(self.last_path if done else None)  # a stop while testing says so

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    # -- what Lightning does not restore (Lightning-AI/pytorch-lightning#8278) -------------------
    def state_dict(self) -> dict[str, Any]:
        """Also the last validation's metrics, which a run resumed at its end reports again."""
        trainer = self._trainer
        now = trainer.callback_metrics if trainer is not None else {}
        return {
            "dirpath": str(self.dirpath),
            "saved_at": self._saved_at,
            "validation": {k: float(v) for k, v in now.items() if k in VALIDATION_METRICS},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict if isinstance(state_dict, dict) else {}  # a checkpoint is data

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A stop this run's EarlyStopping had decided (its state, restored) ends it, as it did
        before the checkpoint: a run killed while testing trains no epoch more when resumed."""
        self._trainer = trainer
        self._trained = False  # till Lightning's fit loop starts (on_train_start)
        done = EarlyStoppingReason.NOT_STOPPED
        if any(c.stopping_reason != done for c in trainer.early_stopping_callbacks):
            trainer.should_stop = True  # Lightning's fit loop then trains no more (min_epochs met)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Resumed at its end (Lightning's fit loop skipped), the run ends as an unbroken one:
        the epoch it ended in counts as done, early stopping's or `max_steps`' cut one too, and
        it reports its last validation."""
        restored = self._restored
        self._restored = {}
        if self._trained:
            return
        why = "early stopping had ended the run" if trainer.should_stop else "trained to its end"
        log.info("Nothing left to train: its checkpoint is of iteration %d, %s.",
                 trainer.global_step, why)  # fmt: skip
        progress = trainer.fit_loop.epoch_progress.current
        progress.completed = progress.started
        values = restored.get("validation")
        for key, value in values.items() if isinstance(values, dict) else ():
            if key in VALIDATION_METRICS and isinstance(value, float):
                if torch.isfinite(restored_value := torch.tensor(value)):  # float32, as logged
                    trainer.callback_metrics.setdefault(key, restored_value)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # trainer.max_steps ends an epoch part-way, and Lightning records that epoch as trained:
        # resumed, the run would go on with the next one and skip the rest of this one. (A run
        # resumed at its end counts it done for its own report, `on_fit_end`: not saved so.)
        if epoch_cut_short(trainer):
            progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
            for counts in (progress["total"], progress["current"]):
                counts["processed"] = min(counts["processed"], counts["started"] - 1)
                counts["completed"] = min(counts["completed"], counts["started"] - 1)


def _outlive_the_launcher(trainer: L.Trainer, timeout: float = 15.0) -> None:
    """In a process that Lightning's launcher started (DDP rank > 0), leaving on an agreed stop:
    at exit, wait (up to `timeout` s) for the main process to end first. The launcher's watchdog
    SIGKILLs the main process, its exit line and code unsaid, if it sees a child end non-zero."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    launched = isinstance(environment, LightningEnvironment) and trainer.local_rank > 0
    if not launched or not is_script_launcher(trainer.strategy.launcher):
        return
    parent = os.getppid()

    def wait_for_parent() -> None:
        deadline = time.monotonic() + timeout
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.05)

    atexit.register(wait_for_parent)


def _non_finite(outputs: Any, pl_module: L.LightningModule) -> str | None:
    """What went non-finite, the loss or the batch-norm state, at which iteration; None if
    nothing.

    The state counts too: with a large learning rate the loss can stay finite while the
    running variance overflows, and the network would then predict with infinities.
    A module that writes its values out in blocks (`non_finite`) has checked them on the
    device; others are checked here, at every iteration.
    """
    if hasattr(pl_module, "non_finite"):
        return pl_module.non_finite
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    at = f"at iteration {pl_module.global_step}"
    if loss is not None and not math.isfinite(float(loss)):
        return f"the loss is {float(loss)} {at}"
    state = getattr(getattr(pl_module, "net", None), "state", {})
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            return f"the batch-norm state {key} is not finite {at}"
    return None


def _out_of_steps(trainer: L.Trainer) -> bool:
    return 0 <= trainer.max_steps <= trainer.global_step


def _learning_rate(trainer: L.Trainer) -> float:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, AttributeError):
        return float("nan")
