"""The example's custom training loop as a LightningModule with manual optimization."""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from src.compat import count_optimizer_step
from src.model.cuda_graph import CapturedStep, CudaGraphBackend, EagerBackend
from src.model.network import DigitsNet, State
from src.model.schedulers import build_scheduler, epoch_cut_short, stops_early
from src.model.state import BN_STATS_MODES, BNStats, clone_state, population_statistics
from src.model.step_block import StepBlock, StepRecord, write_records

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]

# What a callback can watch while training (EarlyStopping's `monitor`) and a sweeper optimise
# (`optimized_metric`), and whether each is better higher ("max") or lower ("min"): the metrics
# logged through Lightning at each validation pass. The per-iteration values go to the loggers
# directly, and test/* exists only once training is over.
VALIDATION_METRICS = {"val/acc": "max", "val/loss": "min"}


class BNStateModule(L.LightningModule):
    """Trains `DigitsNet` one mini-batch at a time, carrying its batch-norm state explicitly."""

    def __init__(
        self,
        update_state: bool = True,
        bn_stats: BNStats = "running",
        optimizer: OptimizerFactory | None = None,
        scheduler: Mapping[str, Any] | None = None,
        log_block_steps: int = 100,
        log_block_seconds: float = 2.0,
        cuda_graph: bool = False,
        channels_last: bool = False,
        **network: Any,
    ) -> None:
        """`network`: DigitsNet's own arguments (`model.num_filters`, ...), passed through."""
        super().__init__()
        if bn_stats not in BN_STATS_MODES:
            raise ValueError(f"bn_stats={bn_stats!r} is not one of {BN_STATS_MODES}")
        # The optimizer factory is not a hyperparameter a checkpoint can rebuild; the run's
        # resolved config records it. Hyperparameters reach TensorBoard once, with the test
        # accuracy, from train.py (HParams tab), so not here.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.automatic_optimization = False  # the loop below is MATLAB's, line for line
        self.net = DigitsNet(**network)
        # Weights and batches in NHWC order (oneDNN's and cuDNN's faster kernels); the 1-D state
        # and the checkpoint (every tensor saved contiguous) are unchanged.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.optimizer_factory = optimizer
        # {interval: step|epoch, scheduler: factory}, or None: a constant learning rate.
        self.scheduler_config = scheduler
        self.scheduler_interval: str | None = None
        self.update_state = update_state
        self.bn_stats = bn_stats
        num_classes = self.net.fc.out_features
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.last_confusion_matrix = None  # numpy, after a test
        # The two candidate states at the end of training; both go into the checkpoint.
        self.running_state: State | None = None
        self.population_state: State | None = None
        self._finalised_at_step = -1
        self._validated_at = -1  # the iteration after which validation last ran
        self._elapsed_before = 0.0  # seconds trained before a resume
        self.run_config: dict[str, Any] | None = None  # the run's resolved config, if known
        self._start: float | None = None
        # Per-iteration values: a device row an iteration, written out in blocks of
        # `log_block_steps` iterations or `log_block_seconds` seconds (src/model/step_block.py).
        self.block: StepBlock | None = None
        self.log_block_steps = log_block_steps
        self.log_block_seconds = log_block_seconds
        # Set by the callbacks that log them (BatchNormStateMonitor, LearningRateMonitor).
        self.watch_state = False
        self.lr_key: str | None = None
        self._lr_group: dict[str, Any] = {}  # the optimizer's, once training starts
        self.latest: dict[str, float] = {}  # host floats of the last values written out
        self.non_finite: str | None = None  # what first went non-finite, and when
        # Every iteration's loss and each epoch's first iteration, for training_progress.png;
        # kept in checkpoints, so that a resumed run draws its whole history.
        self.history: dict[str, list] = {"iterations": [], "losses": [], "epochs": []}
        self.first_batch: tuple[Tensor, int] | None = None  # (images, step), for first_batch.png
        self.cuda_graph = cuda_graph  # the training step captured once and replayed
        self.captured_step: CapturedStep | None = None

    # -- the training loop: the example's, line for line ----------------------------------------
    def train_on_batch(
        self, x: Tensor, y: Tensor, opt: Any, backward: Callable[[Tensor], None]
    ) -> tuple[Tensor, State]:
        """One iteration of the example's loop; returns the loss and the new state."""
        # [dlYPred, state] = forward(dlnet, dlX): scores and the new state; nothing stored yet.
        scores, state = self.net.forward_with_state(x, self.net.state)
        # loss = crossentropy(dlYPred, Y)
        loss = F.cross_entropy(scores, y)
        # gradients = dlgradient(loss, dlnet.Learnables)
        opt.zero_grad()
        backward(loss)
        # Several processes (DDP): each computed its state from its own shard of the global batch.
        # Averaged here, so every process stores the same state and the checkpoint holds it;
        # the loss rides along, so what is logged is the global batch's. One process: as it was.
        state, loss = self.mean_over_processes(state, loss.detach())
        # dlnet.State = state
        if self.update_state:
            self.net.state = state
        # [dlnet, velocity] = sgdmupdate(dlnet, gradients, velocity, learnRate, momentum)
        opt.step()
        return loss, state

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch
        x = x.contiguous(memory_format=self.memory_format)
        if self.first_batch is None:
            self.first_batch = (x, self.global_step)
        lr = self._lr_group["lr"] if self.lr_key else None  # the rate this iteration uses
        block = self.block
        if block.n == 0:
            block.begin(self.net.state)  # the state this block of iterations starts from
        if self.captured_step is None:
            loss, state = self.train_on_batch(x, y, self.optimizers(), self.manual_backward)
            block.write(loss, state)  # the loss and the new state: one row, on the device
        else:  # model.cuda_graph: the same step and its row, replayed as one graph
            loss, state = self.captured_step(x, y)
            # What Lightning's optimizer wrapper does at each step (the iteration count).
            count_optimizer_step(self.optimizers())
        block.notes.append((self.global_step - 1, self.elapsed(), lr))
        if block.due(self.log_block_seconds):
            self.flush_step_values()
        return {"loss": loss}

    def _captured_body(self, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer) -> Any:
        """What a CUDA graph captures: the step and the row it writes, nothing else."""
        loss, state = self.train_on_batch(x, y, optimizer, Tensor.backward)
        self.block.write_at_cursor(loss, state)
        return loss, state

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and getattr(dm, "mean_image", None) is not None:
            # imageInputLayer('Mean', mean(XTrain,4)); a resumed checkpoint overwrites it.
            self.net.input.mean.copy_(dm.mean_image)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        if self.optimizer_factory is None:  # MATLAB's sgdmupdate defaults
            optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        else:
            optimizer = self.optimizer_factory(self.net.parameters())
        trainer = self._trainer
        built = build_scheduler(self.scheduler_config, optimizer, trainer)
        if built is None:
            return optimizer
        scheduler, self.scheduler_interval = built
        if self.scheduler_interval == "step":
            # Stepped right after each update, inside training_step: before any callback's
            # on_train_batch_end, where a checkpoint may be saved, so it holds the new rate.
            optimizer.register_step_post_hook(self.on_optimizer_step_done)
        # Returned to Lightning, which saves and restores its state with every checkpoint.
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_optimizer_step_done(self, optimizer: torch.optim.Optimizer, *args: Any) -> None:
        """After every optimizer update: a per-iteration schedule (`scheduler.interval=step`)
        moves on to the next iteration's rate (OneCycleLR)."""
        self.lr_schedulers().step()

    def step_schedule(self) -> None:
        """The next epoch's rate; ReduceLROnPlateau's on `scheduler.monitor`, if validation ran."""
        scheduler = self.lr_schedulers()
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
        elif self._validated_at == self.global_step:  # this epoch's (not a sanity check's)
            scheduler.step(self.trainer.callback_metrics[self.scheduler_config["monitor"]])

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._validated_at = self.global_step

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (logits) with the stored state, as `predict` uses it."""
        return self.net(x)

    # -- the training loop's start; the CUDA-graph mode --------------------------------------
    def on_train_start(self) -> None:
        self._start = time.monotonic()
        optimizer = self.optimizers().optimizer  # torch's own: no Lightning hooks captured
        self._lr_group = optimizer.param_groups[0]  # read when lr_key is set
        if self.block is None:  # its rows exist before a capture: the graph writes into them
            self.block = StepBlock(max(self.log_block_steps, 1), self.net.state, self.device)
        if self.cuda_graph and self.captured_step is None:
            for group in optimizer.param_groups:
                if "capturable" in group:  # Adam, AdamW: step counts on the device
                    group["capturable"] = True
            # Outside the CLI (which refuses model.cuda_graph on a CPU) the same sequence runs
            # eagerly on a CPU: how the tests check it trains exactly as the plain loop.
            on_gpu = self.device.type == "cuda"
            self.captured_step = CapturedStep(
                lambda x, y: self._captured_body(x, y, optimizer),
                backend=CudaGraphBackend() if on_gpu else EagerBackend(),
            )

    def elapsed(self) -> float:
        """Seconds of training so far, across resumes (the example's `toc(start)`)."""
        running = 0.0 if self._start is None else time.monotonic() - self._start
        return self._elapsed_before + running

    # -- per-iteration values, written out in blocks ------------------------------------------
    def flush_step_values(self) -> list[StepRecord]:
        """Copy the block's values to the host in one transfer and write them to every logger;
        callbacks with `on_step_values(trainer, module, records)` get them too."""
        if self.block is None or self.block.n == 0:
            return []
        decay, carried = float(self.net.bn1.decay), bool(self.update_state)
        records, broken = self.block.take(decay, carried, self.watch_state, self.lr_key)
        self.non_finite = self.non_finite or broken
        for record in records:
            self.latest.update(record.scalars)
            self.history["iterations"].append(record.step + 1)
            self.history["losses"].append(record.scalars["train/loss"])
        if self._trainer is None:
            return records
        if self.trainer.is_global_zero:
            every = max(self.trainer.log_every_n_steps, 1)
            logged = [r for r in records if (r.step + 1) % every == 0]
            for logger in self.loggers:
                write_records(logger, logged)
                logger.save()
        for callback in self.trainer.callbacks:
            if hasattr(callback, "on_step_values"):
                callback.on_step_values(self.trainer, self, records)
        return records

    def mean_over_processes(self, state: State, loss: Tensor) -> tuple[State, Tensor]:
        """The state and the loss averaged over the DDP processes, identical on every process.

        One all-reduce of the 6 state tensors and the loss flattened together. The running mean
        averages to exactly what the global batch's mean would give (equal shards); the running
        variance is the mean of the processes' variances (`model.sync_batchnorm=true` makes
        every process compute the global batch's statistics in the first place). With a single
        process the values come back untouched.
        """
        world_size = self.trainer.world_size if self._trainer is not None else 1
        if world_size <= 1:
            return state, loss
        flat = torch.cat([*(v.reshape(-1) for v in state.values()), loss.reshape(1).float()])
        torch.distributed.all_reduce(flat)  # SUM; an in-place tensor op, no autograd here
        flat /= world_size
        *parts, mean_loss = flat.split([*(v.numel() for v in state.values()), 1])
        averaged = (p.view_as(v).to(v.dtype) for p, v in zip(parts, state.values()))
        return OrderedDict(zip(state, averaged)), mean_loss.view_as(loss).to(loss.dtype)

    # -- after the last epoch: which statistics the network predicts with ------------------------
    def on_train_epoch_start(self) -> None:
        # From the epoch number, not the current step: a run resumed mid-epoch starts there.
        start = self.current_epoch * self.trainer.num_training_batches
        if start not in self.history["epochs"]:
            self.history["epochs"].append(start)

    def on_train_epoch_end(self) -> None:
        # Runs before the checkpoint callbacks save this epoch: the values written out first,
        # and the last checkpoint holds both states.
        self.flush_step_values()
        if self._is_last_epoch():
            self.finalise_state()
        if self.scheduler_interval == "epoch" and not epoch_cut_short(self.trainer):
            self.step_schedule()  # the next epoch's rate (a cut epoch steps once resumed, whole)

    def end_training(self) -> None:
        """The values written out and the state finalised, once: at the end of training, and for
        RunCheckpoint before it saves a run a callback stopped after the epoch's end hook."""
        self.flush_step_values()
        if self._finalised_at_step != self.global_step:  # stopped mid-epoch (max_steps, interrupt)
            self.finalise_state()

    on_train_end = end_training  # Lightning's hook

    def end_skipped_fit(self) -> bool:
        """After a fit Lightning skipped, every iteration done already (a finished run's
        checkpoint resumed, whose population statistics the load set aside): the end of training
        its hooks would have run. Whether there was one to end (and a checkpoint to write)."""
        if self._finalised_at_step == self.global_step:
            return False
        self.to(self.trainer.strategy.root_device)  # fit's teardown moved it to the CPU
        self.finalise_state()
        return True

    def _is_last_epoch(self) -> bool:
        t = self.trainer
        out_of_epochs = t.max_epochs is not None and 0 < t.max_epochs <= self.current_epoch + 1
        out_of_steps = 0 <= t.max_steps <= t.global_step
        return out_of_epochs or out_of_steps or stops_early(t)

    def finalise_state(self) -> None:
        """Keep the running estimate; with `bn_stats=population` replace the network's state by
        the exact statistics of the training set, as MATLAB's `trainNetwork` does."""
        self._finalised_at_step = self.global_step
        self.running_state = clone_state(self.net.state)
        if self.bn_stats != "population":
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            raise RuntimeError("bn_stats=population needs a data module's training set")
        # Under DDP each process passes over its share of the training set and the moments
        # are merged across the processes: every process ends with the same statistics.
        several = self.trainer.world_size > 1
        if hasattr(dm, "ordered_dataloader"):
            loader = functools.partial(dm.ordered_dataloader, "train", sharded=several)
        else:  # a fork's own data module: its training batches, in the order they come
            loader = dm.train_dataloader
        self.population_state = population_statistics(
            self.net, lambda: (batch[0] for batch in loader()), self.device, several
        )
        self.net.state = self.population_state
        log.info("Batch-norm state replaced by population statistics over the training set.")

    # -- validation (data.val_fraction > 0) ----------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Predict with the stored state, as `predict` does: `self.net(x)`, never
        `forward_with_state`, so a validation pass leaves the batch-norm state where it was."""
        x, y = batch
        scores = self.net(x.contiguous(memory_format=self.memory_format))
        # Means weighted by batch size over the epoch: the loss and accuracy of the whole split.
        # Under DDP every process validates on all of it (the loader is not sharded), so the
        # values agree and sync_dist (a mean over the processes) changes nothing but the warning.
        n = len(y)
        loss = F.cross_entropy(scores, y)
        self.log("val/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        acc = (scores.argmax(dim=1) == y).float().mean()
        self.log("val/acc", acc, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)

    # -- test ---------------------------------------------------------------------------------
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        scores = self.net(x.contiguous(memory_format=self.memory_format))
        self.test_acc(scores, y)
        self.test_confusion.update(scores, y)
        self.log("test/acc", self.test_acc, on_epoch=True, batch_size=len(y))

    def on_test_epoch_end(self) -> None:
        matrix = self.test_confusion.compute()
        self.test_confusion.reset()
        per_class = matrix.diag() / matrix.sum(dim=1).clamp(min=1)
        for label, acc in enumerate(per_class):
            # The same on every process (compute() summed the matrix); sync_dist says so to DDP.
            self.log(f"test/class_acc/{label}", acc, sync_dist=True)
        self.last_confusion_matrix = matrix.cpu().numpy()

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.net.predict(batch[0])

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The default layout whatever model.channels_last: the same file, read anywhere.
        checkpoint["state_dict"] = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}
        for state in checkpoint.get("optimizer_states", []):
            for buffers in state.get("state", {}).values():  # a contiguous tensor stays itself
                buffers.update(
                    {k: v.contiguous() for k, v in buffers.items() if torch.is_tensor(v)}
                )
        checkpoint["elapsed_s"] = self.elapsed()
        self.flush_step_values()  # the iterations not written out yet belong in the history
        checkpoint["history"] = self.history
        checkpoint["latest"] = dict(self.latest)  # metrics.json's final values, if nothing is left
        if self.run_config is not None:
            checkpoint["config"] = self.run_config
        # `state_dict` holds the state the network predicts with; this records both candidates.
        checkpoint["bn_statistics"] = {
            "used": self.bn_stats if self.running_state is not None else "running",
            "running": self.running_state,
            "population": self.population_state,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._elapsed_before = float(checkpoint.get("elapsed_s", 0.0))
        # Before 2026-12 the history was the TrainingProgressPlot callback's state.
        old = checkpoint.get("callbacks", {}).pop("TrainingProgressPlot", None)
        history = checkpoint.get("history") or old
        # Read as data: a history of another shape (a tampered file) only loses the old curve.
        if isinstance(history, dict) and all(
            isinstance(history.get(key), list)
            and all(isinstance(v, (int, float)) for v in history[key])
            for key in self.history
        ):
            self.history = {key: list(history[key]) for key in self.history}
        elif history:
            log.warning("The checkpoint's loss history is malformed; the plot starts afresh.")
        latest = checkpoint.get("latest")  # a resume with no iteration left still reports them
        if isinstance(latest, dict) and all(isinstance(v, (int, float)) for v in latest.values()):
            self.latest = {str(k): float(v) for k, v in latest.items()}
        stats = checkpoint.get("bn_statistics") or {}
        self.running_state = stats.get("running")
        self.population_state = stats.get("population")
        resuming = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if resuming and stats.get("used") == "population" and self.running_state is not None:
            # Training carries on from the running estimate, not from the population statistics
            # the network predicted with; swapped in before the weights load, so every callback
            # sees the state training continues from.
            for key, value in self.running_state.items():
                checkpoint["state_dict"][f"net.{key}"] = value.clone()
        if resuming:
            # Training goes on, so the end-of-training pair is out of date until the new end;
            # checkpoints written meanwhile hold the running state only, as any mid-run one does.
            self.running_state = self.population_state = None
