"""The whole experiment through `train(cfg)`, the function the CLI calls, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src.config_checks import ConfigError
from src.train import train


def scalar_tags(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_train_writes_metrics_checkpoint_and_tensorboard(tiny_cfg: DictConfig) -> None:
    metrics = train(tiny_cfg)
    run = Path(tiny_cfg.paths.output_dir)

    saved = json.loads((run / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    assert 0.0 <= saved["test/acc"] <= 1.0
    assert saved["train/loss"] > 0
    assert saved["global_step"] == 200 // 32

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 200 // 32
    assert "net.bn1.running_mean" in ckpt["state_dict"]

    tags = scalar_tags(run)
    for tag in ("train/loss", "train/elapsed_s", "epoch", "test/acc"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    # one loss point per iteration, the example's training-progress plot
    assert [e.step for e in tags["train/loss"]] == list(range(200 // 32))
    assert tags["test/acc"][-1].value == pytest.approx(saved["test/acc"])


def test_train_rejects_a_bad_value_before_writing_anything(tiny_cfg: DictConfig) -> None:
    with open_dict(tiny_cfg):
        tiny_cfg.optimizer.momentum = 1.0
    with pytest.raises(ConfigError, match=r"optimizer\.momentum"):
        train(tiny_cfg)
    assert not Path(tiny_cfg.paths.output_dir).exists()
