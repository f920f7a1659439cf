"""The whole experiment through `train(cfg)`, the function the CLI calls, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import DictConfig, open_dict
from PIL import Image

from src.errors import ConfigError
from src.reports import figures
from src.train import train
from tests.conftest import TINY, tb_events


def scalar_tags(run_dir: Path) -> dict[str, list]:
    acc = tb_events(run_dir / "tensorboard")
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_train_writes_metrics_checkpoint_and_tensorboard(
    tiny_cfg: DictConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = figures.first_batch

    def counting(trainer, module) -> None:
        calls.append(module.global_step)
        original(trainer, module)

    monkeypatch.setattr(figures, "first_batch", counting)
    with open_dict(tiny_cfg):  # 2 epochs of 6 iterations
        tiny_cfg.trainer.max_epochs = 2
    metrics = train(tiny_cfg)
    run = Path(tiny_cfg.paths.output_dir)

    resolved = (run / "config.yaml").read_text()
    assert "${" not in resolved and "cache_dir: " + str(tiny_cfg.paths.cache_dir) in resolved

    saved = json.loads((run / "metrics.json").read_text())
    assert saved.pop("overrides") == TINY  # what made this run differ, for sweeps to read
    assert saved == metrics
    # over the whole test set of 100 images, not an average of batch averages
    assert saved["test/acc"] * 100 == pytest.approx(round(saved["test/acc"] * 100))
    assert saved["train/loss"] > 0
    assert saved["global_step"] == 2 * (200 // 32)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 * (200 // 32)
    assert "net.bn1.running_mean" in ckpt["state_dict"]

    tags = scalar_tags(run)
    for tag in ("train/loss", "train/elapsed_s", "epoch", "test/acc"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    # one loss point per iteration, the example's training-progress plot
    assert [e.step for e in tags["train/loss"]] == list(range(2 * (200 // 32)))
    assert tags["test/acc"][-1].value == pytest.approx(saved["test/acc"])
    assert saved["test/acc_running"] == saved["test/acc"]

    # the first training batch, drawn once after training (not at every iteration or epoch): a
    # grid of its 32 images, 6 a row, in first_batch.png and as train/first_batch at step 0
    assert calls == [2 * (200 // 32)]
    grid = np.asarray(Image.open(run / "first_batch.png"))
    assert grid.dtype == np.uint8 and grid.shape == (6 * 29 + 1, 6 * 29 + 1)
    assert grid.max() > 128  # digits, not a blank picture
    images = tb_events(run / "tensorboard").Images("train/first_batch")
    assert len(images) == 1 and images[0].step == 0


def test_tensorboard_shows_the_state_hparams_and_figures(tiny_cfg: DictConfig) -> None:
    with open_dict(tiny_cfg):
        tiny_cfg.trainer.log_every_n_steps = 2
    metrics = train(tiny_cfg)
    run = Path(tiny_cfg.paths.output_dir)
    acc = tb_events(run / "tensorboard")
    tags = acc.Tags()
    steps = 200 // 32
    for layer in ("bn1", "bn2", "bn3"):
        for stat in ("running_mean", "running_var"):
            hist = acc.Histograms(f"{layer}/{stat}")
            assert [h.step for h in hist] == [1, 3, 5]  # every log_every_n_steps iterations
            assert hist[-1].histogram_value.num == 20  # one value per channel
        for scalar in ("running_mean_avg", "running_var_avg", "batch_mean_gap", "batch_var_ratio"):
            assert len(acc.Scalars(f"{layer}/{scalar}")) == steps // 2
    # the last histogram is the state the network ended with
    final_var = acc.Histograms("bn2/running_var")[-1].histogram_value
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    var = ckpt["state_dict"]["net.bn2.running_var"]
    assert final_var.min == pytest.approx(var.min().item(), rel=1e-5)
    assert final_var.max == pytest.approx(var.max().item(), rel=1e-5)

    assert [e.step for e in acc.Scalars("train/loss")] == [1, 3, 5]  # as Lightning logs
    for label in range(10):
        assert f"test/class_acc/{label}" in tags["scalars"]
    assert {"train/progress", "test/confusion_matrix"} <= set(tags["images"])
    assert (run / "training_progress.png").stat().st_size > 10_000
    assert (run / "confusion_matrix.png").stat().st_size > 10_000

    # HParams: the real test accuracy, not a placeholder hp_metric
    assert "hp_metric" not in tags["scalars"]
    assert acc.Scalars("hparams/test_acc")[-1].value == pytest.approx(metrics["test/acc"])
    content = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.01)
    assert start.hparams["model.bn_stats"].string_value == "running"
    assert start.hparams["data.batch_size"].number_value == 32
    # and Lightning's hparams.yaml holds them too (it was written empty, {})
    saved = yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())
    assert saved["optimizer.lr"] == pytest.approx(0.01) and saved["model.bn_stats"] == "running"


def test_train_rejects_a_bad_value_before_writing_anything(tiny_cfg: DictConfig) -> None:
    with open_dict(tiny_cfg):
        tiny_cfg.optimizer.momentum = 1.0
    with pytest.raises(ConfigError, match=r"optimizer\.momentum"):
        train(tiny_cfg)
    assert not Path(tiny_cfg.paths.output_dir).exists()
