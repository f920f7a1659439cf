"""Serves digit images from memory in the example's mini-batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from src.data.arrays import DataError
from src.data.sources import load_source


class InMemoryBatches(Dataset):
    """Indexed by a tensor of indices, returns the whole batch: one gather, no per-sample loop."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[idx], self.labels[idx]


class EpochBatchSampler(Sampler[Tensor]):
    """Yields each batch's indices. Shuffled, the permutation is a function of (seed, epoch) only,
    so an epoch is the same whenever it is replayed (a resumed run sees the same batches).

    Shuffled: floor(N/B) full batches, like `numIterationsPerEpoch = floor(N/miniBatchSize)`.
    In order: ceil(N/B) batches, the last one partial, like the example's `modelPredictions`.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.batches_done = 0  # of the current epoch's batches, handed out so far
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) after a restore

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(self.num_samples)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]  # the restored epoch: carry on after its last trained batch
        self._resume = None
        self.batches_done = start
        for i in range(start, len(self)):
            self.batches_done = i + 1
            yield order[i * self.batch_size : (i + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        """Where the data order stands: the epoch and how many of its batches were handed out."""
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "seed": self.seed,
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
        mid_epoch = 0 < state["batches_done"] < len(self)
        if mid_epoch and mismatch:
            raise DataError(
                f"cannot resume in the middle of epoch {state['epoch'] + 1}: the data order "
                f"changed ({', '.join(mismatch)}); keep those settings or resume from an "
                "end-of-epoch checkpoint"
            )
        self.epoch = state["epoch"]
        self._resume = (state["epoch"], state["batches_done"]) if mid_epoch else None


class EpochLoader(DataLoader):
    """A DataLoader that Lightning saves and restores with the checkpoint.

    Lightning (2.2+) stores the `state_dict()` of a training loader that has `state_dict` and
    `load_state_dict` in the fit loop's checkpoint state and restores it on `fit(ckpt_path=...)`:
    the library's own mechanism for resuming mid-epoch. torchdata's `StatefulDataLoader` is the
    general implementation; this one needs no extra package, since the position in an epoch is
    simply the sampler's batch count (the permutation itself follows from (seed, epoch)).
    The loader has a length, so Lightning does not prefetch and the count is exact.
    """

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


class DigitsDataModule(L.LightningDataModule):
    """Digit images (built-in generator by default) with the training set's mean image."""

    def __init__(
        self,
        source: str = "synthetic",
        batch_size: int = 128,
        test_batch_size: int | None = None,
        shuffle_seed: int = 0,
        cache_dir: str | Path | None = None,
        **source_options: Any,
    ) -> None:
        super().__init__()
        self.source = source
        self.batch_size = batch_size  # MATLAB: miniBatchSize
        self.test_batch_size = test_batch_size or batch_size
        self.shuffle_seed = shuffle_seed
        self.cache_dir = cache_dir
        self.source_options = source_options
        self.train_set: InMemoryBatches | None = None
        self.test_set: InMemoryBatches | None = None
        self.mean_image: Tensor | None = None

    def prepare_data(self) -> None:
        # One process builds the cache; setup() on every process then reads it.
        if self.train_set is None:  # unless setup() has already run here (src/train.py)
            load_source(self.source, self.cache_dir, self.source_options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test = load_source(self.source, self.cache_dir, self.source_options)
        if len(train) < self.batch_size:
            raise DataError(
                f"data.batch_size={self.batch_size} is larger than the {len(train)} training "
                f"images of data source '{self.source}': not one full mini-batch to train on"
            )
        self.train_set = InMemoryBatches(
            torch.from_numpy(train.images), torch.from_numpy(train.labels)
        )
        self.test_set = InMemoryBatches(
            torch.from_numpy(test.images), torch.from_numpy(test.labels)
        )
        # `mean(XTrain, 4)`, summed in float64 so the mean image does not depend on the order.
        self.mean_image = torch.from_numpy(train.images.mean(axis=0, dtype=np.float64)).float()

    def train_dataloader(self) -> EpochLoader:
        assert self.train_set is not None, "call setup() first"
        sampler = EpochBatchSampler(len(self.train_set), self.batch_size, True, self.shuffle_seed)
        return EpochLoader(self.train_set, sampler=sampler, batch_size=None)

    def ordered_dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Batches of a split in order, the last one partial (for testing and statistics)."""
        data = self.train_set if split == "train" else self.test_set
        assert data is not None, "call setup() first"
        sampler = EpochBatchSampler(len(data), batch_size or self.test_batch_size, False)
        return DataLoader(data, sampler=sampler, batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return self.ordered_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.ordered_dataloader("test")
