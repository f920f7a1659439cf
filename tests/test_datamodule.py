"""Batches cut like the example's loop, and a data cache that is never trusted blindly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader, TensorDataset

from src.data import cache
from src.data.arrays import DigitArrays
from src.data.datamodule import DigitsDataModule, EpochBatchSampler, InMemoryBatches
from src.errors import DataError
from src.train import train
from tests.conftest import TINY, compose_config


def test_train_batches_are_floor_n_over_b_reshuffled_and_test_batches_in_order() -> None:
    sampler = EpochBatchSampler(5000, 128, shuffle=True, seed=3)
    assert len(sampler) == 39  # floor(5000/128): the last 8 samples of each epoch are skipped
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == 39 and all(len(b) == 128 for b in batches)
        seen = torch.cat(batches)
        assert len(torch.unique(seen)) == 39 * 128  # no sample twice in an epoch
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[1], epochs[2])
    # an epoch's order depends on (seed, epoch) only: replaying it gives the same batches
    sampler.set_epoch(1)
    assert torch.equal(torch.cat(list(sampler)), epochs[1])
    other = EpochBatchSampler(5000, 128, shuffle=True, seed=4)
    other.set_epoch(1)
    assert not torch.equal(torch.cat(list(other)), epochs[1])
    # test batches: in order, with the last one partial
    batches = list(EpochBatchSampler(5000, 128, shuffle=False))
    assert len(batches) == 40  # ceil(5000/128)
    assert len(batches[-1]) == 5000 - 39 * 128
    assert torch.equal(torch.cat(batches), torch.arange(5000))


def test_datamodule_serves_in_memory_batches_dealt_by_the_trainers_rank(cache_dir: Path) -> None:
    dm = DigitsDataModule(batch_size=32, test_batch_size=64, cache_dir=cache_dir,
                          num_train_per_class=20, num_test_per_class=10)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 200 // 32
    x, y = train[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    test = list(dm.test_dataloader())
    assert [len(b[1]) for b in test] == [64, 36]
    assert torch.equal(torch.cat([b[1] for b in test]), dm.test_set.labels)
    # under DDP (trainer=ddp_cpu), process 1 of 2 gets its shard of each loader
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    assert len(dm.train_dataloader()) == 200 // 64
    assert [len(y) for _, y in dm.test_dataloader()] == [36]  # batch 1 of 2: the partial one
    assert [len(y) for _, y in dm.ordered_dataloader("test")] == [64, 36]  # not sharded
    dm.trainer = None
    assert len(dm.train_dataloader()) == 200 // 32
    # a mini-batch for each of 7 processes (224 images) is more than the 200: refused by name,
    # not an epoch of no iterations (was exit 0, untrained)
    assert dm.batch_problem(6) is None
    assert "data.batch_size=32 for each of 7 processes is 224 images" in dm.batch_problem(7)


def test_labels_past_the_networks_outputs_are_refused_and_absent_classes_said(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A label the network has no output for is one line, whose advice suits a checkpoint's
    fixed network too (was: set model.num_classes, which evaluate then refused); a class below
    model.num_classes with no image is a warning, one above it none (was: for any of 0-9)."""
    dm = DigitsDataModule(
        batch_size=8, cache_dir=cache_dir, num_train_per_class=4, num_test_per_class=2
    )
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(DataError, match="labels up to 9: set model.num_classes=10 or more"):
        dm.check_labels(3)
    with pytest.raises(DataError, match="checkpoint's network has 3 outputs: give it such data"):
        dm.check_labels(3, trained=True)
    for name in ("train_set", "test_set"):  # eight classes
        images, labels = getattr(dm, name).tensors
        setattr(dm, name, InMemoryBatches(images[labels < 8], labels[labels < 8]))
    dm.check_labels(8)
    assert not caplog.records
    dm.check_labels(10)
    assert [r.getMessage() for r in caplog.records] == [
        f"The {split} set of 'synthetic' has no images of class(es) 8, 9."
        for split in ("train", "test")
    ]


def test_data_depends_on_data_seed_not_on_the_run(cache_dir: Path) -> None:
    def load(batch_size: int = 8, **kw):
        dm = DigitsDataModule(batch_size=batch_size, cache_dir=cache_dir, num_train_per_class=5,
                              num_test_per_class=5, **kw)  # fmt: skip
        dm.setup()
        return dm.train_set.images, dm.test_set.images

    a_train, a_test = load(seed=0, shuffle_seed=1)
    b_train, b_test = load(seed=0, shuffle_seed=2)
    c_train, _ = load(seed=1, shuffle_seed=1)
    assert torch.equal(a_train, b_train) and torch.equal(a_test, b_test)
    assert not torch.equal(a_train, c_train)
    assert not torch.equal(a_train[:50], a_test[:50])  # train and test are independent draws
    # a batch larger than the training set is an error
    with pytest.raises(DataError, match=r"data\.batch_size=128 is larger than the 50 training"):
        load(batch_size=128)


def _arrays(n: int = 10, seed: int = 0) -> DigitArrays:
    rng = np.random.default_rng(seed)
    return DigitArrays(rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n))


def test_cache_is_built_once_and_a_damaged_file_rebuilt(tmp_path: Path) -> None:
    calls = []

    def build():
        calls.append(1)
        return _arrays()

    a = cache.cached(tmp_path, "x", {"k": 1}, build)
    b = cache.cached(tmp_path, "x", {"k": 1}, build)
    assert len(calls) == 1
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    cache.cached(tmp_path, "x", {"k": 2}, build)  # other settings, other file
    assert len(calls) == 2
    assert not list(tmp_path.glob(".*.tmp*"))
    path = cache.cache_path(tmp_path, "x", {"k": 1})
    sound = path.read_bytes()
    flipped = bytearray(sound)  # a byte inside the image data: the file still parses
    flipped[len(sound) // 2] ^= 0xFF
    for damaged in (sound[: len(sound) // 2], bytes(flipped), b"not a numpy file"):
        path.write_bytes(damaged)
        assert cache.load_cached(path) is None
        rebuilt = cache.cached(tmp_path, "x", {"k": 1}, build)
        assert np.array_equal(rebuilt.images, _arrays(seed=0).images)
        assert cache.load_cached(path) is not None  # and the sound copy is written back


class TensorDigits(L.LightningDataModule):
    """A fork's own data module, as Lightning's docs write one: random images and labels."""

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        images, labels = torch.rand(64, 1, 28, 28, generator=g), torch.arange(64) % 10
        self.train_set, self.test_set = TensorDataset(images, labels), TensorDataset(images, labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")  # its own
def test_a_forks_own_data_module_trains_tests_and_resumes(tmp_path: Path, cache_dir: Path) -> None:
    """The project's checks of its own data module are not asked of another (was an
    AttributeError once the run folder existed), population statistics come from its
    training batches (was a RuntimeError after training), and its run resumes (its stored data
    settings were refused as untrusted once the run folder existed)."""

    def config(run: str, *args: str) -> DictConfig:
        cfg = compose_config([*TINY, "model.bn_stats=population", *args], tmp_path / run, cache_dir)
        with open_dict(cfg):
            cfg.data = {"_target_": f"{__name__}.TensorDigits", "batch_size": 16}
        return cfg

    assert train(config("run"))["global_step"] == 64 // 16  # its loader's batches
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert train(config("more", "trainer.max_epochs=2", f"ckpt_path={last}"))["global_step"] == 8
    ckpt = torch.load(last, weights_only=False)
    stats = ckpt["bn_statistics"]
    assert stats["used"] == "population"
    for key, value in stats["population"].items():
        assert torch.equal(ckpt["state_dict"][f"net.{key}"], value)
        assert not torch.equal(value, stats["running"][key])
