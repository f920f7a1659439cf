"""Serves digit images from memory in the example's mini-batches."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from src.data.arrays import (
    DigitArrays,
    batch_problem,
    held_out,
    num_batches,
    overfit_problem,
    split_problem,
)
from src.data.sources import load_source
from src.data.sources.common import SPLITS
from src.errors import DataError

log = logging.getLogger(__name__)


class InMemoryBatches(TensorDataset):
    """Indexed by a tensor of indices, returns the whole batch: one gather, no per-sample loop."""

    images = property(lambda self: self.tensors[0])
    labels = property(lambda self: self.tensors[1])
    device = property(lambda self: self.tensors[0].device)


class EpochBatchSampler(Sampler[Tensor]):
    """Yields each batch's indices. Shuffled, the permutation is a function of (seed, epoch) only,
    so an epoch is the same whenever it is replayed (a resumed run sees the same batches).

    Shuffled: floor(N/B) full batches, like `numIterationsPerEpoch = floor(N/miniBatchSize)`.
    In order: ceil(N/B) batches, the last one partial, like the example's `modelPredictions`.

    Several processes (`rank` of `world_size`, DDP): shuffled, process r takes at iteration i
    `order[(i*W + r)*B : (i*W + r + 1)*B]`, so the W batches of iteration i together are the
    single-process batch of size W*B at iteration i, and an epoch has floor(N / (B*W))
    iterations. In order, the batches are dealt out, process r taking batches r, r+W, ... with
    no padding, so the processes together see every sample exactly once.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
        if not shuffle and 0 < -(-num_samples // batch_size) < world_size:
            # Fewer batches than processes: smaller ones, so that no process is left without any.
            batch_size = -(-num_samples // world_size)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        # Where the indices go: the data's device, so that indexing data resident on a GPU
        # needs no copy per batch (the epoch's permutation moves there once).
        self.device = device
        self.batches_done = 0  # of the current epoch's batches, handed out so far
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) after a restore

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return self.num_samples // (self.batch_size * self.world_size)
        batches = -(-self.num_samples // self.batch_size)
        return max(0, -(-(batches - self.rank) // self.world_size))

    def _slot(self, i: int) -> int:
        """The position, among all processes' batches of the epoch, of this process's i-th."""
        return i * self.world_size + self.rank

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(self.num_samples)
        if self.device is not None:
            order = order.to(self.device)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]  # the restored epoch: carry on after its last trained batch
        self._resume = None
        self.batches_done = start
        for i in range(start, len(self)):
            self.batches_done = i + 1
            slot = self._slot(i)
            yield order[slot * self.batch_size : (slot + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        """Where the data order stands: the epoch and how many of its batches were handed out."""
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "world_size": self.world_size,  # processes that shared each epoch
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass over `state['epoch']` start after its first `batches_done` batches."""
        mismatch = [
            f"data.{key}={getattr(self, attr)} (the checkpoint's: {state[attr]})"
            for key, attr in (("batch_size", "batch_size"), ("shuffle_seed", "seed"))
            if attr in state and state[attr] != getattr(self, attr)
        ]
        if state.get("num_samples", self.num_samples) != self.num_samples:
            mismatch.append(f"{self.num_samples} training images (the checkpoint's: "
                            f"{state['num_samples']})")  # fmt: skip
        saved_world = state.get("world_size", 1)  # checkpoints from before DDP: one process
        if saved_world != self.world_size:
            mismatch.append(f"{self.world_size} processes (the checkpoint's: {saved_world})")
        # Whether the checkpoint stopped inside an epoch, by its own cut of the epoch.
        per_epoch = state.get("num_samples", self.num_samples) // (
            state.get("batch_size", self.batch_size) * saved_world
        )
        mid_epoch = 0 < state["batches_done"] < per_epoch
        if mid_epoch and mismatch:
            raise DataError(
                f"cannot resume in the middle of epoch {state['epoch'] + 1}: the data order "
                f"changed ({', '.join(mismatch)}); keep those settings or resume from an "
                "end-of-epoch checkpoint"
            )
        self.epoch = state["epoch"]
        # Where it stands till it hands out a batch: a run resumed at its end saves it so.
        self.batches_done = state["batches_done"]
        self._resume = (state["epoch"], state["batches_done"]) if mid_epoch else None


class EpochLoader(DataLoader):
    """A DataLoader that Lightning (2.2+) saves with the checkpoint and restores on
    `fit(ckpt_path=...)`, as it does any training loader with `state_dict`/`load_state_dict`:
    the position in an epoch is the sampler's batch count (the permutation follows from (seed,
    epoch)), so torchdata's `StatefulDataLoader` is not needed. Having a length, the loader is
    not prefetched by Lightning, so the count is exact.
    """

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


def validation_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The training images held out for validation: a stratified, seeded share, sorted.

    Each class keeps its share: of its n images, round(n * fraction) (halves rounded up) are
    held out, the first ones of a permutation drawn for that class from numpy's PCG64
    generator seeded with (seed, label), the same on every platform and independent of the
    run's seed and of the other classes.
    """
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = held_out(len(members), fraction)
        order = np.random.default_rng([int(seed), int(label)]).permutation(len(members))
        chosen.append(members[order[:count]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


class DigitsDataModule(L.LightningDataModule):
    """Digit images (built-in generator by default) with the training set's mean image."""

    def __init__(
        self,
        source: str = "synthetic",
        batch_size: int = 128,
        test_batch_size: int | None = None,
        shuffle_seed: int = 0,
        cache_dir: str | Path | None = None,
        val_fraction: float = 0.0,
        val_seed: int = 0,
        on_device: bool | str = "auto",
        overfit_batches: int = 0,
        **source_options: Any,
    ) -> None:
        super().__init__()
        self.source = source
        self.batch_size = batch_size  # MATLAB: miniBatchSize
        self.test_batch_size = test_batch_size or batch_size
        self.shuffle_seed = shuffle_seed
        self.cache_dir = cache_dir
        # The share of each class's training images held out for validation (0: none, as in
        # the example), chosen by `val_seed` alone: every run of a sweep validates on the same.
        self.val_fraction = val_fraction
        self.val_seed = val_seed
        self.source_options = source_options
        # Keep the images on the trainer's GPU for the whole run: "auto" when they take at
        # most half of its free memory; true: always; false: batches are copied one at a time.
        self.on_device = on_device
        # Above 0: train on the images of the first N mini-batches only, the same batches in
        # the same order every epoch (a debugging check that the loop can fit anything).
        self.overfit_batches = overfit_batches
        self.train_set: InMemoryBatches | None = None
        self.val_set: InMemoryBatches | None = None
        self.val_indices: np.ndarray | None = None  # positions in the source's training set
        self.test_set: InMemoryBatches | None = None
        self.mean_image: Tensor | None = None

    def prepare_data(self) -> None:
        # One process builds the cache; setup() on every process then reads it.
        if self.test_set is None:  # unless setup() has already run here (src/train.py)
            load_source(self.source, self.cache_dir, self.source_options)

    def setup(self, stage: str | None = None, splits: tuple[str, ...] = SPLITS) -> None:
        """The `splits`, read once. `stage` "fit" (or None) is a run that trains, whose
        mini-batches must be cut from the training set; testing reads it only for population
        statistics, and `splits=("test",)` not at all (src.evaluate: data.train_file unset).
        Read once: Lightning's own `setup("test")` later finds the data read."""
        if self.test_set is not None and (self.train_set is not None or stage == "test"):
            return
        train, test = load_source(self.source, self.cache_dir, self.source_options, splits)
        self.test_set = InMemoryBatches(
            torch.from_numpy(test.images), torch.from_numpy(test.labels)
        )
        if train is None:  # the test set alone: nothing to train on, validate or average
            return
        training = stage in ("fit", None)
        if training and (problem := batch_problem(self.batch_size, len(train), self.source)):
            raise DataError(problem)
        if self.val_fraction > 0:
            val_idx = validation_indices(train.labels, self.val_fraction, self.val_seed)
            labels, counts = np.unique(train.labels, return_counts=True)
            per_class = dict(zip(labels.tolist(), counts.tolist(), strict=True))
            split = split_problem(per_class, self.val_fraction, self.batch_size, self.source,
                                  training)  # fmt: skip
            if split:
                raise DataError(split)
            keep = np.setdiff1d(np.arange(len(train)), val_idx)  # sorted: the source's order
            self.val_indices = val_idx
            self.val_set = InMemoryBatches(
                torch.from_numpy(train.images[val_idx]), torch.from_numpy(train.labels[val_idx])
            )
            # Only the images left to train on: the mean image and the batches come from them.
            train = DigitArrays(train.images[keep], train.labels[keep])
        if self.overfit_batches:
            train = self._first_batches(train)
        self.train_set = InMemoryBatches(
            torch.from_numpy(train.images), torch.from_numpy(train.labels)
        )
        # `mean(XTrain, 4)`, summed in float64 so the mean image does not depend on the order.
        self.mean_image = torch.from_numpy(train.images.mean(axis=0, dtype=np.float64)).float()

    def _first_batches(self, train: DigitArrays) -> DigitArrays:
        """data.overfit_batches=N: the images of the first N mini-batches a normal run's first
        epoch would train on, in that order. (Lightning's trainer.overfit_batches would replace
        the training loader's sampler, which is ours: see EpochLoader.)"""
        if problem := overfit_problem(self.overfit_batches, self.batch_size, len(train),
                                      self.source):  # fmt: skip
            raise DataError(problem)
        sampler = EpochBatchSampler(len(train), self.batch_size, True, self.shuffle_seed)
        batches = iter(sampler)
        chosen = torch.cat([next(batches) for _ in range(self.overfit_batches)]).numpy()
        return DigitArrays(train.images[chosen], train.labels[chosen])

    def _process_position(self) -> tuple[int, int]:
        """(rank, world size) of this process in the trainer's DDP run; (0, 1) otherwise."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _resident(self, data: InMemoryBatches) -> InMemoryBatches:
        """`data`, moved once to the trainer's GPU if it should live there (`data.on_device`)."""
        strategy = getattr(getattr(self, "trainer", None), "strategy", None)
        device = getattr(strategy, "root_device", None)
        if device is None or device.type != "cuda" or data.device == device:
            return data
        if self.on_device is False:
            return data
        if self.on_device == "auto":
            free, _ = torch.cuda.mem_get_info(device)
            if sum(t.nbytes for t in data.tensors) > free // 2:
                return data
        data.tensors = tuple(t.to(device) for t in data.tensors)
        return data

    def num_batches(self, split: str, processes: int = 1) -> int:
        """An epoch's batches of `split` (train, val or test) in the process that gets fewest,
        as the loaders deal them out among `processes`; 0 for a split the run does not have."""
        data = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        if data is None:
            return 0
        training = split == "train"
        size = self.batch_size if training else self.test_batch_size
        return num_batches(len(data), size, processes, training, self.overfit_batches)

    def batch_problem(self, processes: int) -> str | None:
        """Why the training set cannot give each of `processes` a full mini-batch, or None."""
        assert self.train_set is not None, "call setup() first"
        if self.overfit_batches:  # its batches are shared out whole (train_dataloader)
            return None
        return batch_problem(self.batch_size, len(self.train_set), self.source, processes)

    def check_labels(self, num_classes: int | None, trained: bool = False) -> None:
        """DataError unless every label fits the network's `model.num_classes` outputs (fixed
        by its checkpoint where `trained`); a warning for each class a split has no image of."""
        sets = {"train": self.train_set, "validation": self.val_set, "test": self.test_set}
        sets = {name: s for name, s in sets.items() if s is not None and len(s)}
        top = max((int(s.labels.max()) for s in sets.values()), default=-1)
        if num_classes is None:
            return
        if top >= num_classes:
            fix = f"set model.num_classes={top + 1} or more"
            if trained:  # the command line cannot change the network a checkpoint holds
                fix = f"its checkpoint's network has {num_classes} outputs: give it such data"
            raise DataError(
                f"model.num_classes={num_classes}, but data source '{self.source}' has "
                f"labels up to {top}: {fix}"
            )
        for name in ("train", "test"):  # a validation split is drawn from the training set
            if name in sets and (
                absent := set(range(num_classes)) - set(sets[name].labels.tolist())
            ):
                said = ", ".join(map(str, sorted(absent)))
                log.warning(
                    "The %s set of '%s' has no images of class(es) %s.", name, self.source, said
                )

    def train_dataloader(self) -> EpochLoader:
        """Each process's shard of every epoch's permutation; `data.batch_size` is per process.
        The trainer must leave the sampler alone (`use_distributed_sampler: false`)."""
        assert self.train_set is not None, "call setup() first"
        rank, world_size = self._process_position()
        data = self._resident(self.train_set)
        if self.overfit_batches and self.overfit_batches % world_size:
            raise DataError(
                f"data.overfit_batches={self.overfit_batches} cannot be shared equally by "
                f"{world_size} processes: use a multiple of {world_size}"
            )
        shuffle = not self.overfit_batches  # overfitting: the same batches in the same order
        sampler = EpochBatchSampler(
            len(data), self.batch_size, shuffle, self.shuffle_seed, rank, world_size, data.device
        )
        return EpochLoader(data, sampler=sampler, batch_size=None)

    def ordered_dataloader(
        self, split: str, batch_size: int | None = None, sharded: bool = False
    ) -> DataLoader:
        """Batches of a split in order, the last one partial (for testing and statistics).

        `sharded`: under DDP this process's share of the batches only (batches r, r+W, ...), for
        passes whose results are summed across the processes (torchmetrics, population
        statistics); otherwise every process gets all of them."""
        data = {"train": self.train_set, "val": self.val_set}.get(split, self.test_set)
        assert data is not None, "call setup() first" if split != "val" else "no validation split"
        rank, world_size = self._process_position() if sharded else (0, 1)
        size = batch_size or self.test_batch_size
        data = self._resident(data)
        sampler = EpochBatchSampler(
            len(data), size, False, rank=rank, world_size=world_size, device=data.device
        )
        return DataLoader(data, sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out images in order, in batches of data.test_batch_size; with
        data.val_fraction=0 no loader at all, so Lightning runs no validation."""
        if self.val_set is None:
            return []
        return self.ordered_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        # Sharded: the test metrics sum their counts across the processes in compute().
        return self.ordered_dataloader("test", sharded=True)
