"""A checkpoint resumes exactly: 1 epoch + resume to 2 equals 2 epochs straight."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import open_dict

from src.train import train
from tests.conftest import TINY, compose_config


def test_resume_from_last_checkpoint_is_exact(tmp_path: Path, cache_dir: Path) -> None:
    straight = compose_config([*TINY, "trainer.max_epochs=2", "test=false"], tmp_path / "a",
                              cache_dir)  # fmt: skip
    train(straight)
    first = compose_config([*TINY, "trainer.max_epochs=1", "test=false"], tmp_path / "b", cache_dir)
    train(first)
    resumed = compose_config([*TINY, "trainer.max_epochs=2", "test=false"], tmp_path / "c",
                             cache_dir)  # fmt: skip
    with open_dict(resumed):
        resumed.ckpt_path = str(tmp_path / "b" / "checkpoints" / "last.ckpt")
    metrics = train(resumed)
    assert metrics["global_step"] == 2 * (200 // 32)

    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    c = torch.load(tmp_path / "c" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["state_dict"].keys() == c["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, c["state_dict"][key]), key  # weights and batch-norm state
    momentum_a = a["optimizer_states"][0]["state"]
    momentum_c = c["optimizer_states"][0]["state"]
    for i in momentum_a:
        assert torch.equal(momentum_a[i]["momentum_buffer"], momentum_c[i]["momentum_buffer"])
