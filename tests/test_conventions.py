"""The lightning-hydra-template's conventions: debug configs, loggers, optimizers and schedules,
callbacks=none, tags, train=false, and entries without a _target_."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import open_dict

from src.checkpoint import read_checkpoint
from src.config.rules import check_config
from src.errors import ConfigError
from src.train import train
from tests.conftest import TINY, compose_config, read_csv
from tests.test_validation import datamodule

ITERS = 200 // 32  # iterations an epoch in the TINY setting
# TINY without its epoch count, for configs that set their own
TINY_DATA = [o for o in TINY if not o.startswith("trainer.max_epochs")]
# Only the callbacks that checkpoint, show progress and log the learning rate: faster runs
LEAN = ["~callbacks.bn_state_monitor", "reports=none"]


def csv_rows(run: Path) -> list[dict[str, str]]:
    return read_csv(run / "csv" / "metrics.csv")


def column(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    """{step: value} of one metric of the CSV logger."""
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


# ---------------------------------------------------------------------------------------------
# debug=...


DEBUG_CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "debug").glob("*"))


def test_debug_configs_exist_and_write_apart_from_real_runs(tmp_path: Path) -> None:
    assert DEBUG_CONFIGS == ["default", "fdr", "limit", "overfit", "profiler"]
    for name in DEBUG_CONFIGS:
        cfg = compose_config([f"debug={name}"], tmp_path, tmp_path)
        check_config(cfg)
        assert cfg.task_name == "debug"
        assert str(cfg.hydra.run.dir).startswith("outputs/debug/runs/")
        assert str(cfg.hydra.sweep.dir).startswith("outputs/debug/multiruns/")
        assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("default", ["trainer.max_epochs=1"]),
        ("fdr", []),
        # 10% of 25 training batches of 8 images: 2 an epoch; of 10 test batches of 10: 1
        ("limit", ["data.batch_size=8", "data.test_batch_size=10"]),
        pytest.param("profiler", [], marks=pytest.mark.slow),  # profiling costs seconds
    ],
)
def test_debug_config_runs(tmp_path: Path, cache_dir: Path, name: str, extra: list[str]) -> None:
    run = tmp_path / "run"
    metrics = train(compose_config([*TINY_DATA, f"debug={name}", *extra], run, cache_dir))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test/acc"] == metrics["test/acc"]
    expected_steps = {"default": ITERS, "fdr": 1, "limit": 3 * 2, "profiler": ITERS}[name]
    assert saved["global_step"] == expected_steps
    if name == "profiler":
        report = (run / "fit-profiler.txt").read_text()
        assert "run_training_batch" in report and "training_step" in report
        assert (run / "test-profiler.txt").is_file()
    if name == "fdr":  # Lightning logs nothing in a fast_dev_run: no TensorBoard folder either
        assert not (run / "tensorboard").exists()
    else:
        assert (run / "tensorboard").is_dir()


def test_debug_overfit_fits_the_same_three_batches(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    cfg = compose_config([*TINY_DATA, "debug=overfit", "logger=csv", *LEAN], run, cache_dir)
    assert cfg.data.overfit_batches == 3 and cfg.trainer.max_epochs == 20
    with open_dict(cfg):
        cfg.trainer.max_epochs = 5  # of its 20 epochs: enough to see the loss fall
    metrics = train(cfg)
    assert metrics["global_step"] == 5 * 3  # 3 batches an epoch
    loss = column(csv_rows(run), "train/loss")
    assert sorted(loss) == list(range(15))
    # 96 images being memorised: handwriting (generator version 2) takes longer than print did
    # (0.29 after 15 iterations, where the print fonts were under 0.1).
    assert loss[0] > 1.0 and loss[14] < 0.5


def test_overfit_batches_are_the_first_epochs_first_batches_every_epoch(cache_dir: Path) -> None:
    first_epoch = list(datamodule(cache_dir, shuffle_seed=3).train_dataloader())
    loader = datamodule(cache_dir, shuffle_seed=3, overfit_batches=2).train_dataloader()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 2
        for (x, y), (fx, fy) in zip(batches, first_epoch[:2]):
            assert torch.equal(x, fx) and torch.equal(y, fy)


# ---------------------------------------------------------------------------------------------
# logger=csv|mlflow|many_loggers, tags


def test_logger_configs_compose(tmp_path: Path) -> None:
    cfg = compose_config(["logger=mlflow"], tmp_path, tmp_path)
    assert cfg.logger.mlflow.tracking_uri == "sqlite:///./outputs/mlflow.db"  # no server
    assert cfg.logger.mlflow.experiment_name == "train"
    cfg = compose_config(["logger=many_loggers", "tags=[a,b]"], tmp_path / "2025_run", tmp_path)
    assert set(cfg.logger) == {"csv", "mlflow", "tensorboard"}
    assert cfg.logger.mlflow.run_name == "a-b_2025_run"
    assert cfg.logger.mlflow.tags == {"a": "true", "b": "true"}
    check_config(cfg)
    # src.evaluate has tags too, so its logger=mlflow resolves
    cfg = compose_config(["logger=mlflow"], tmp_path / "ev", tmp_path, config_name="evaluate")
    assert cfg.logger.mlflow.run_name == "dev_ev"
    assert cfg.logger.mlflow.experiment_name == "evaluate"


@pytest.mark.slow
def test_many_loggers_receive_every_value(tmp_path: Path, cache_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    cfg = compose_config([*TINY, "logger=many_loggers", "tags=[dev,tiny]"], run, cache_dir)
    with open_dict(cfg):  # the MLflow store under tmp, not outputs/ of the working copy
        cfg.logger.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        cfg.logger.mlflow.artifact_location = str(tmp_path / "mlflow-artifacts")
    metrics = train(cfg)
    assert yaml.safe_load((run / "config.yaml").read_text())["tags"] == ["dev", "tiny"]

    # CSV: one loss a training iteration, the learning rate, the test accuracy, the settings
    rows = csv_rows(run)
    assert sorted(column(rows, "train/loss")) == list(range(ITERS))
    assert column(rows, "lr-SGD") == {step: 0.01 for step in range(ITERS)}
    assert list(column(rows, "test/acc").values()) == [pytest.approx(metrics["test/acc"])]
    assert column(rows, "hparams/test_acc") == {ITERS: pytest.approx(metrics["test/acc"])}
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["tags"] == "dev,tiny" and hparams["optimizer.lr"] == 0.01

    # MLflow, read back from its SQLite store
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("train")
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    assert found.info.run_name == "dev-tiny_run"
    assert found.data.tags["dev"] == "true" and found.data.tags["tiny"] == "true"
    assert found.data.params["optimizer.lr"] == "0.01" and found.data.params["tags"] == "dev,tiny"
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(ITERS))
    assert [m.value for m in client.get_metric_history(run_id, "test/acc")] == [
        pytest.approx(metrics["test/acc"])
    ]
    assert len(client.get_metric_history(run_id, "lr-SGD")) == ITERS
    assert found.info.status == "FINISHED"

    # TensorBoard still gets the HParams with the real test accuracy
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------------------------
# optimizer=..., scheduler=...


def expected_rates(name: str, lr: float, epochs: int) -> list[float]:
    """The learning rate of each iteration, computed here from each schedule's definition."""
    steps = range(epochs * ITERS)
    if name == "none":
        return [lr for _ in steps]
    if name == "piecewise":  # LearnRateDropFactor 0.5 every LearnRateDropPeriod 1 epoch
        return [lr * 0.5 ** (s // ITERS) for s in steps]
    if name == "cosine":  # over the run's epochs, eta_min 0
        return [lr * (1 + math.cos(math.pi * (s // ITERS) / epochs)) / 2 for s in steps]
    # onecycle, cosine annealing, 30% warm-up; torch's own formula, replayed step by step
    total, start, peak, end = epochs * ITERS, lr / 25, lr, lr / 25 / 1e4
    warm = 0.3 * total - 1
    rates = []
    for s in steps:
        if s <= warm:
            low, high, pct = start, peak, s / warm
        else:
            low, high, pct = peak, end, (s - warm) / (total - 1 - warm)
        rates.append(high + (low - high) / 2 * (1 + math.cos(math.pi * pct)))
    return rates


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "extra", "name", "momentum"),
    [
        ("sgdm", "none", [], "SGD", 0.9),
        ("sgd", "piecewise", ["scheduler.scheduler.step_size=1", "scheduler.scheduler.gamma=0.5"],
         "SGD", 0.0),
        ("adam", "cosine", [], "Adam", (0.9, 0.999)),
        ("adamw", "onecycle", [], "AdamW", (0.9, 0.999)),
    ],
)  # fmt: skip
def test_each_optimizer_and_schedule_sets_the_logged_learning_rate(
    tmp_path: Path, cache_dir: Path, optimizer: str, scheduler: str, extra: list[str], name: str,
    momentum: float | tuple[float, float],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    settings = [*TINY_DATA, *LEAN, "trainer.max_epochs=2", "test=false", "logger=csv",
                f"optimizer={optimizer}", f"scheduler={scheduler}", *extra]  # fmt: skip
    cfg = compose_config(settings, run, cache_dir)
    train(cfg)
    rates = column(csv_rows(run), f"lr-{name}")
    want = expected_rates(scheduler, cfg.optimizer.lr, 2)
    assert sorted(rates) == list(range(2 * ITERS))
    assert [rates[s] for s in sorted(rates)] == pytest.approx(want, rel=1e-6, abs=1e-12)

    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    group = ckpt["optimizer_states"][0]["param_groups"][0]
    assert group["momentum" if optimizer.startswith("sgd") else "betas"] == momentum
    if optimizer == "adamw":
        assert group["weight_decay"] == 0.01
    # the schedule's own state is in the checkpoint (none: nothing to save)
    assert len(ckpt["lr_schedulers"]) == (0 if scheduler == "none" else 1)


def test_reduce_on_plateau_steps_on_the_validation_metric(tmp_path: Path, cache_dir: Path) -> None:
    """scheduler=plateau: ReduceLROnPlateau steps on `scheduler.monitor` after each epoch's
    validation (was a TypeError after the first epoch: stepped with no metric)."""
    run, epochs = tmp_path / "run", 4
    settings = [*TINY_DATA, *LEAN, f"trainer.max_epochs={epochs}", "test=false", "logger=csv",
                "optimizer=sgd", "data.val_fraction=0.2", "scheduler=plateau",
                "scheduler.scheduler.patience=0", "scheduler.scheduler.factor=0.5",
                "scheduler.monitor=val/acc", "scheduler.scheduler.mode=max"]  # fmt: skip
    train(compose_config(settings, run, cache_dir))
    rows, iters = csv_rows(run), (200 - 40) // 32
    accuracy = [v for _, v in sorted(column(rows, "val/acc").items())]
    rates = column(rows, "lr-SGD")
    assert len(accuracy) == epochs and sorted(rates) == list(range(epochs * iters))
    replay = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(replay, "max", factor=0.5, patience=0)
    for epoch, acc in enumerate(accuracy[:-1], start=1):  # the rate of the epoch after
        plateau.step(acc)
        assert rates[epoch * iters] == pytest.approx(replay.param_groups[0]["lr"], rel=1e-6)
    # (on the 2-core development machine the accuracy falls after epoch 1, so the rate drops)
    # An epoch without validation leaves the rate (was a KeyError at its end)
    every_other = [*settings, "+trainer.check_val_every_n_epoch=2"]
    assert train(compose_config(every_other, tmp_path / "other", cache_dir))["epochs"] == epochs


def test_a_schedule_shorter_than_the_run_is_refused_before_training(
    tmp_path: Path, cache_dir: Path
) -> None:
    """OneCycleLR refuses to step past total_steps: was a ValueError traceback mid-run."""
    cfg = compose_config([*TINY, "scheduler=onecycle", "scheduler.scheduler.total_steps=3"],
                         tmp_path, cache_dir)  # fmt: skip
    said = r"^scheduler\.scheduler\.total_steps=3 is fewer than the run's 6 iterations, .*null"
    with pytest.raises(ConfigError, match=said):
        train(cfg)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


# ---------------------------------------------------------------------------------------------
# callbacks=none, train=false, entries without _target_


def test_callbacks_none_still_trains_and_tests(tmp_path: Path, cache_dir: Path) -> None:
    """With Lightning's max_time in its dict form, which reached the Trainer as a config and
    failed there (`Missing key total_seconds`)."""
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "callbacks=none", "+trainer.max_time={hours:1}"], run, cache_dir)
    assert not cfg.callbacks
    metrics = train(cfg)
    assert metrics["global_step"] == ITERS and "test/acc" in metrics
    assert not (run / "training_progress.png").exists()  # none of the project's callbacks ran


def test_without_a_logger_the_lr_monitor_stands_aside_and_train_false_tests_that_network(
    tmp_path: Path, cache_dir: Path, ckpt: Path
) -> None:
    """The `ckpt` fixture's run is logger=none with every callback: Lightning's own
    LearningRateMonitor would have raised there without a logger. train=false then tests the
    checkpoint's network."""
    assert "lr_monitor" in compose_config([*TINY, "logger=none"], tmp_path, tmp_path).callbacks
    trained_metrics = json.loads((ckpt.parents[1] / "metrics.json").read_text())
    assert trained_metrics["global_step"] == ITERS and "test/acc" in trained_metrics
    run = tmp_path / "run"
    cfg = compose_config([*TINY, "train=false", f"ckpt_path={ckpt}"], run, cache_dir)
    train(cfg)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test/acc"] == trained_metrics["test/acc"]  # the same network, the same data
    assert saved["global_step"] == 0  # nothing trained in this run
    assert not (run / "checkpoints").exists()
