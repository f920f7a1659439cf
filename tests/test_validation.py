"""The validation split (data.val_fraction), early stopping on val/acc, and the Optuna search."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from src.data.datamodule import DigitsDataModule, validation_indices
from src.data.sources import load_source
from src.errors import ConfigError, DataError
from src.model.module import VALIDATION_METRICS, BNStateModule
from src.train import train
from tests.conftest import TINY, compose_config, fit
from tests.test_train import scalar_tags

SMALL = {"num_train_per_class": 20, "num_test_per_class": 10}  # TINY's data


def datamodule(cache_dir: Path, **kw) -> DigitsDataModule:
    dm = DigitsDataModule(**{"batch_size": 32, "cache_dir": cache_dir, **SMALL, **kw})
    dm.setup("fit")
    return dm


def test_split_is_stratified_seeded_and_disjoint_and_none_leaves_the_data(cache_dir: Path) -> None:
    source, _ = load_source("synthetic", cache_dir, SMALL)
    dm = datamodule(cache_dir, val_fraction=0.2, shuffle_seed=1)
    val = dm.val_indices
    # per class round(20 * 0.2) = 4 held out; the rest train, in the source's order
    assert np.bincount(source.labels[val], minlength=10).tolist() == [4] * 10
    assert np.bincount(dm.train_set.labels.numpy(), minlength=10).tolist() == [16] * 10
    keep = np.setdiff1d(np.arange(len(source)), val)
    assert len(np.intersect1d(keep, val)) == 0 and len(keep) + len(val) == len(source)
    assert torch.equal(dm.train_set.images, torch.from_numpy(source.images[keep]))
    assert torch.equal(dm.val_set.images, torch.from_numpy(source.images[val]))
    assert torch.equal(dm.val_set.labels, torch.from_numpy(source.labels[val]))
    # the run's seed does not move it, val_seed does
    other_run = datamodule(cache_dir, val_fraction=0.2, shuffle_seed=7)
    assert np.array_equal(other_run.val_indices, val)
    assert not np.array_equal(datamodule(cache_dir, val_fraction=0.2, val_seed=1).val_indices, val)
    # the mean image is the remaining training images' only
    expected = torch.from_numpy(source.images[keep].mean(axis=0, dtype=np.float64)).float()
    torch.testing.assert_close(dm.mean_image, expected, rtol=0, atol=0)
    assert not torch.equal(dm.mean_image, datamodule(cache_dir).mean_image)
    # validation batches: in order, data.test_batch_size, the last one partial
    dm64 = datamodule(cache_dir, val_fraction=0.2, test_batch_size=64)
    assert [len(y) for _, y in dm64.val_dataloader()] == [40]
    assert [len(y) for _, y in datamodule(cache_dir, val_fraction=0.2, test_batch_size=16)
            .val_dataloader()] == [16, 16, 8]  # fmt: skip
    # no split leaves the data as it was
    whole = datamodule(cache_dir, val_fraction=0.0)
    assert whole.val_set is None and whole.val_dataloader() == []
    assert torch.equal(whole.train_set.images, torch.from_numpy(source.images))
    assert torch.equal(whole.train_set.labels, torch.from_numpy(source.labels))
    expected = torch.from_numpy(source.images.mean(axis=0, dtype=np.float64)).float()
    assert torch.equal(whole.mean_image, expected)


def test_split_counts_round_per_class_and_fixed_numbers() -> None:
    labels = np.repeat(np.arange(3), [10, 5, 3])
    val = validation_indices(labels, 0.3, 0)
    # round(10 * .3) = 3, round(5 * .3) = round(1.5) = 2 (halves up), round(3 * .3) = 1
    assert np.bincount(labels[val]).tolist() == [3, 2, 1]
    # 0.29 * 100 = 28.999999999999996 in floating point: rounding, not flooring, gives 29
    assert len(validation_indices(np.zeros(100, dtype=np.int64), 0.29, 0)) == 29
    # numpy's PCG64 from (val_seed, label): fixed numbers, the same on every platform
    assert validation_indices(np.zeros(10, dtype=np.int64), 0.3, 0).tolist() == [2, 4, 6]


class BeforeValidation(BNStateModule):
    """The module as it was before validation: Lightning's own hook, no validation code."""

    validation_step = L.LightningModule.validation_step


class DataBeforeValidation(DigitsDataModule):
    """The data module as it was before validation: no validation loader."""

    val_dataloader = L.LightningDataModule.val_dataloader


@pytest.mark.filterwarnings("ignore:Total length of `list`")  # src.data.datamodule
def test_val_fraction_0_trains_bit_for_bit_as_before(
    cache_dir: Path, tmp_path: Path, small_fit
) -> None:
    old_trainer, old, _ = fit(cache_dir, tmp_path, module=BeforeValidation,
                              datamodule=DataBeforeValidation)  # fmt: skip
    trainer, model, _ = small_fit  # data.val_fraction=0: the default
    assert not trainer.val_dataloaders  # no validation loop ran
    assert not any(k.startswith("val/") for k in trainer.callback_metrics)
    assert trainer.global_step == old_trainer.global_step == 2 * (200 // 32)
    new_weights, old_weights = model.state_dict(), old.state_dict()
    assert new_weights.keys() == old_weights.keys()
    for key, value in old_weights.items():
        assert torch.equal(new_weights[key], value), key


def test_validation_leaves_the_state_and_weights_alone(cache_dir: Path, tmp_path: Path) -> None:
    trainer, model, _ = fit(cache_dir, tmp_path, data={"val_fraction": 0.2})
    assert trainer.global_step == 2 * (160 // 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (result,) = trainer.validate(model, datamodule=trainer.datamodule, verbose=False)
    assert set(result) == set(VALIDATION_METRICS)  # what the config's check lets a callback watch
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # and it predicts with the stored state: the accuracy of model.net on the held-out images
    dm = trainer.datamodule
    with torch.no_grad():
        scores = model.net(dm.val_set.images)
    acc = (scores.argmax(1) == dm.val_set.labels).float().mean().item()
    loss = torch.nn.functional.cross_entropy(scores, dm.val_set.labels).item()
    assert result["val/acc"] == pytest.approx(acc, abs=1e-6)
    assert result["val/loss"] == pytest.approx(loss, rel=1e-5)


def test_a_run_with_a_split_logs_val_metrics_and_stops_early(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # patience 0 and an improvement of more than 1.0 in accuracy: impossible after the first
    stop = ["+callbacks/early_stopping=val_acc", "callbacks.early_stopping.patience=0",
            "callbacks.early_stopping.min_delta=1.0"]  # fmt: skip
    cfg = compose_config([*TINY, "trainer.max_epochs=5", "data.val_fraction=0.2", "test=false",
                          *stop], tmp_path / "run", cache_dir)  # fmt: skip
    metrics = train(cfg)
    assert metrics["epochs"] == 2 and metrics["global_step"] == 2 * (160 // 32)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 * (160 // 32)
    assert ckpt["bn_statistics"]["running"] is not None  # the module knew it was the last epoch
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("val/acc", "val/loss"):
        assert math.isfinite(saved[key]) and saved[key] == pytest.approx(metrics[key])
    # over all 40 held-out images, not an average of batch averages
    assert saved["val/acc"] * 40 == pytest.approx(round(saved["val/acc"] * 40))
    assert saved["global_step"] == 2 * (160 // 32)  # 16 of each class's 20 images train
    tags = scalar_tags(run)
    assert len(tags["val/acc"]) == len(tags["val/loss"]) == 2  # one point an epoch
    assert tags["val/acc"][-1].value == pytest.approx(saved["val/acc"])
    # Stopped after its last checkpoint (killed while testing, say) and resumed: no epoch more
    # (Lightning restores no stop a callback asked for), the same validation reported.
    again_args = [*TINY, "trainer.max_epochs=5", "data.val_fraction=0.2", "test=false", *stop,
                  f"ckpt_path={run}/checkpoints/last.ckpt"]  # fmt: skip
    again = compose_config(again_args, tmp_path / "resumed", cache_dir)
    caplog.set_level(logging.INFO, logger="src.callbacks.run_checkpoint")
    resumed = train(again)
    said = "Nothing left to train: its checkpoint is of iteration 10, early stopping had ended"
    assert said in caplog.text
    assert resumed["global_step"] == saved["global_step"] and resumed["epochs"] == saved["epochs"]
    assert resumed["val/acc"] == saved["val/acc"] and resumed["val/loss"] == saved["val/loss"]
    # without early stopping, the same checkpoint trains on
    onward = compose_config([*TINY, "trainer.max_epochs=3", "data.val_fraction=0.2", "test=false",
                             f"ckpt_path={run}/checkpoints/last.ckpt"], tmp_path / "onward",
                            cache_dir)  # fmt: skip
    with pytest.warns(UserWarning, match="callbacks used to create the checkpoint"):  # Lightning's
        assert train(onward)["global_step"] == 3 * (160 // 32)
    # a checkpoint is data: a state that is no dict, or values no validation gives, are ignored
    odd_values = {"val/acc": math.nan, "val/loss": 1e300, "test/acc": 1.0}  # 1e300: inf in float32
    for state in ("evil", {"saved_at": torch.tensor([10, 10]), "validation": odd_values}):
        ckpt["callbacks"] = {k: state if k.startswith("RunCheckpoint") else v
                             for k, v in ckpt["callbacks"].items()}  # fmt: skip
        torch.save(ckpt, tmp_path / "odd.ckpt")
        odd = compose_config([*again_args[:-1], f"ckpt_path={tmp_path}/odd.ckpt"],
                             tmp_path / f"odd_{len(str(state))}", cache_dir)  # fmt: skip
        odd_metrics = train(odd)
        assert {"test/acc", "val/acc", "val/loss"}.isdisjoint(odd_metrics)
        assert odd_metrics["epochs"] == saved["epochs"]


def test_a_run_early_stopping_ended_mid_epoch_resumes_as_it_ended(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Validated every 2 iterations, the run stops in the middle of an epoch: resumed there, it
    counts that epoch as done too."""
    args = [
        *TINY,
        "trainer.max_epochs=5",
        "data.val_fraction=0.2",
        "test=false",
        "+trainer.val_check_interval=2",
        "+callbacks/early_stopping=val_acc",
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=1.0",
    ]
    ended = train(compose_config(args, tmp_path / "run", cache_dir))
    again = [*args, f"ckpt_path={tmp_path}/run/checkpoints/last.ckpt"]
    resumed = train(compose_config(again, tmp_path / "resumed", cache_dir))
    for key in ("epochs", "global_step", "val/acc", "val/loss"):
        assert resumed[key] == ended[key], key
    # and its checkpoint, written again, continues as the unbroken run's would
    loops = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["loops"]
             for run in ("run", "resumed")]  # fmt: skip
    assert loops[0]["fit_loop"]["epoch_progress"] == loops[1]["fit_loop"]["epoch_progress"]


def test_a_stop_decided_at_the_epochs_end_saves_the_final_state(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Lightning's EarlyStopping checks at the epoch's end by default, after the module's own
    end: the last checkpoint of a bn_stats=population run held the running state, and
    src.evaluate scored it otherwise than the run had."""
    stop = ["+callbacks/early_stopping=val_acc", "callbacks.early_stopping.patience=0",
            "callbacks.early_stopping.min_delta=1.0",
            "callbacks.early_stopping.check_on_train_epoch_end=true"]  # fmt: skip
    args = [*TINY, "trainer.max_epochs=5", "data.val_fraction=0.2", "model.bn_stats=population"]
    cfg = compose_config([*args, *stop], tmp_path / "run", cache_dir)
    assert train(cfg)["epochs"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    stats = ckpt["bn_statistics"]
    assert stats["used"] == "population" and stats["population"] is not None
    for key, value in stats["population"].items():
        assert torch.equal(ckpt["state_dict"][f"net.{key}"], value)


def test_a_stop_asked_for_before_min_epochs_finalises_once_at_the_real_end(
    tmp_path: Path, cache_dir: Path
) -> None:
    """EarlyStopping asks to stop after epoch 1, but trainer.min_epochs=3 trains on: the state
    was replaced by population statistics at the request, and the epochs after trained from it."""
    stop = [
        "+callbacks/early_stopping=val_acc",
        "callbacks.early_stopping.patience=0",
        "callbacks.early_stopping.min_delta=1.0",
        "callbacks.early_stopping.check_on_train_epoch_end=true",
        "+trainer.min_epochs=3",
    ]
    args = [*TINY, "data.val_fraction=0.2", "model.bn_stats=population", "test=false"]
    assert (
        train(compose_config([*args, "trainer.max_epochs=5", *stop], tmp_path / "es", cache_dir))[
            "epochs"
        ]
        == 3
    )
    train(compose_config([*args, "trainer.max_epochs=3"], tmp_path / "three", cache_dir))
    stopped, three = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
                      for run in ("es", "three"))  # fmt: skip
    for key, value in three["bn_statistics"]["running"].items():  # the same running estimate
        assert torch.equal(stopped["bn_statistics"]["running"][key], value), key


def test_validating_less_often_than_an_epoch_says_how(tmp_path: Path, cache_dir: Path) -> None:
    """Lightning knows an epoch's length only once fitting: one line then (was a traceback)."""
    cfg = compose_config([*TINY, "data.val_fraction=0.2", "+trainer.val_check_interval=100"],
                         tmp_path / "run", cache_dir)  # fmt: skip
    said = r"^trainer\.val_check_interval=100 is more than the 5 training batches of an epoch: "
    with pytest.raises(ConfigError, match=said + r".*check_val_every_n_epoch=null$"):
        train(cfg)


@pytest.mark.parametrize(
    ("limit", "said"),
    [
        ("trainer.limit_train_batches=0.1", "of the 5 train batches is less than one: use at "
         "least 0.2"),
        ("+trainer.limit_val_batches=0.5", "of the 1 val batch is less than one: use 1.0 (all)"),
        ("trainer.limit_test_batches=0.4", "of the 2 test batches is less than one: use at least "
         "0.5"),
    ],
)  # fmt: skip
def test_a_fraction_of_less_than_one_batch_is_refused_before_training(
    tmp_path: Path, cache_dir: Path, limit: str, said: str
) -> None:
    """Lightning refuses it once its loop starts (the test split's: after all the training).
    The built-in data's batches are counted from the config, before the run folder; other
    sources' once read (`checked=True`: the config's check passed, as it does for them)."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "data.val_fraction=0.2", limit], run, cache_dir)
    for checked in (False, True):
        with pytest.raises(ConfigError, match=f"^{re.escape(limit.lstrip('+'))} {re.escape(said)}"):
            train(cfg, checked)
        assert run.exists() == checked  # the folder only where the data was read to count
    assert not (run / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"val_fraction": 0.6, "num_train_per_class": 1, "batch_size": 4}, "class 0"),
        ({"val_fraction": 0.5, "batch_size": 128}, "fewer than data.batch_size=128"),
        ({"val_fraction": 0.01}, "holds out no image"),
    ],
)
def test_a_split_that_cannot_work_is_a_data_error(kw: dict, needle: str, cache_dir: Path) -> None:
    with pytest.raises(DataError, match=rf"data\.val_fraction=.*{needle}"):
        datamodule(cache_dir, **{**SMALL, **kw})


def test_hparams_search_config(tmp_path: Path, cache_dir: Path) -> None:
    cfg: DictConfig = compose_config(["hparams_search=optuna"], tmp_path / "run", cache_dir)
    assert cfg.optimized_metric == "val/acc" and cfg.data.val_fraction > 0
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert {"optimizer.lr", "optimizer.momentum"} <= set(sweeper.params)
    assert "interval" in sweeper.params["optimizer.lr"]
