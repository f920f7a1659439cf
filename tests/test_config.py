"""The configs: every experiment and group option composes, and says what the example says."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.config.compose import preflight
from src.config.rules import check_config
from src.errors import ConfigError
from src.model.precision import fast_precision
from tests.conftest import CONF, compose_config, raised_line

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_defaults_are_the_examples_variables_and_its_experiments_exist(tmp_path: Path) -> None:
    cfg = compose_config([], tmp_path, tmp_path)
    assert cfg.trainer.max_epochs == 5  # numEpochs
    assert cfg.data.batch_size == 128  # miniBatchSize
    assert cfg.optimizer.lr == 0.01  # learnRate
    assert cfg.optimizer.momentum == 0.9  # momentum
    assert cfg.trainer.accelerator == "auto"  # executionEnvironment
    assert cfg.model.update_state is True and cfg.model.bn_stats == "running"
    assert cfg.data.val_fraction == 0 and cfg.optimized_metric is None  # no split, no search
    # real runs write apart from debug runs (test_conventions.py: debug=...)
    assert cfg.task_name == "train" and str(cfg.hydra.run.dir).startswith("outputs/train/runs/")
    assert {"matlab_example", "forgot_state_update", "population_stats"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_passes_the_checks(tmp_path: Path, name: str) -> None:
    cfg = compose_config([f"experiment={name}"], tmp_path, tmp_path)
    check_config(cfg)
    expected = {
        "forgot_state_update": ("model.update_state", False),
        "population_stats": ("model.bn_stats", "population"),
        "matlab_example": ("model.update_state", True),
        "fast": ("trainer.precision", fast_precision("auto")),  # what this machine computes fastest
    }[name]
    assert OmegaConf.select(cfg, expected[0]) == expected[1]


def test_an_experiment_of_ones_own_sets_the_runs_seed_and_tags(tmp_path: Path) -> None:
    """As lightning-hydra-template's experiments do (found on `hydra.searchpath`); config.yaml's
    own values replaced them."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\ntags: [x]\n")
    overrides = ["experiment=mine", f"hydra.searchpath=[file://{tmp_path}]"]
    cfg = compose_config(overrides, tmp_path / "run", tmp_path)
    assert cfg.seed == 7 and list(cfg.tags) == ["x"]
    # a key of config.yaml given with a +: replaced, as Hydra does (was "nothing reads" it)
    cfg = compose_config(["+tags=[z]"], tmp_path / "run", tmp_path)
    check_config(cfg)
    assert list(cfg.tags) == ["z"]
    # and from a primary config of one's own that includes config.yaml (--config-name)
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nnum_threads: 1\n")
    argv = ["--config-dir", str(tmp_path), "--config-name", "mine", "+tags=[z]", "--cfg", "job"]
    (cfg,) = preflight(argv, str(CONF), "config")[1]
    assert list(cfg.tags) == ["z"] and cfg.num_threads == 1


@pytest.mark.parametrize(
    ("text", "needles"),
    [  # was a traceback of PyYAML's, exit 1
        ("# @package _global_\noptimizer:\n  lr: [0.1\n", ["broken.yaml", "line 3"]),
        # was filed under experiment.optimizer.lr, which nothing reads: optimizer.lr stayed 0.01
        ("optimizer:\n  lr: 0.5\n", ["experiment=broken: its settings land under experiment.",
                                     "'# @package _global_'"]),
    ],
)  # fmt: skip
def test_an_experiment_of_ones_own_that_cannot_work_is_one_line(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "broken.yaml").write_text(text)
    argv = ["--config-dir", str(tmp_path), "experiment=broken", f"hydra.run.dir={tmp_path}/run"]
    raised_line(ConfigError, lambda: preflight(argv, str(CONF), "config"), *needles)
    assert not (tmp_path / "run").exists()
