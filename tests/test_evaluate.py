"""`python -m src.evaluate`: a saved checkpoint tested again, on its own data or another's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig

from src.evaluate import evaluate
from src.train import train
from tests.conftest import TINY, assert_one_line_error, cli_in_process, compose_config, tb_events


def compose_evaluate(overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """The config `python -m src.evaluate` would compose, on the CPU."""
    return compose_config([*overrides, "trainer=cpu"], output_dir, cache_dir, "evaluate")


@pytest.fixture(scope="module")
def trained(
    ckpt: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> dict[str, tuple]:
    """One tiny run per bn_stats mode, same seed and data: (checkpoint, its metrics). The
    session's `ckpt` is the running one (bn_stats=running is the default)."""
    run = tmp_path_factory.mktemp("train_population")
    population = train(compose_config([*TINY, "model.bn_stats=population"], run, cache_dir))
    return {
        "running": (ckpt, json.loads((ckpt.parents[1] / "metrics.json").read_text())),
        "population": (run / "checkpoints" / "last.ckpt", population),
    }


@pytest.mark.slow
def test_cli_reproduces_the_training_runs_accuracy(
    trained: dict, tmp_path: Path, cache_dir: Path
) -> None:
    ckpt, train_metrics = trained["running"]
    run = tmp_path / "eval"
    proc = cli_in_process(f"ckpt_path={ckpt}", f"paths.cache_dir={cache_dir}",
                          f"hydra.run.dir={run}", module="src.evaluate")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] == train_metrics["test/acc"]
    for k in range(10):
        assert metrics[f"test/class_acc/{k}"] == train_metrics[f"test/class_acc/{k}"]
    assert metrics["ckpt_path"] == str(ckpt)
    assert metrics["bn_stats"] == "running" and metrics["num_test_images"] == 100
    assert (run / "confusion_matrix.png").stat().st_size > 10_000
    assert (run / "evaluate.log").is_file()
    assert "Predicting with bn_stats=running" in proc.stdout + proc.stderr
    acc = tb_events(run / "tensorboard")
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert "test/confusion_matrix" in acc.Tags()["images"]


def test_the_other_statistics_and_data_overrides_apply_to_the_checkpoint(
    trained: dict, tmp_path: Path, cache_dir: Path
) -> None:
    # the two runs differ only in the statistics they predict with, and that shows
    assert trained["running"][1]["test/acc"] != trained["population"][1]["test/acc"]
    for mode, other in (("running", "population"), ("population", "running")):
        ckpt, _ = trained[other]
        cfg = compose_evaluate([f"ckpt_path={ckpt}", f"model.bn_stats={mode}"],
                               tmp_path / mode, cache_dir)  # fmt: skip
        metrics = evaluate(cfg)
        assert metrics["bn_stats"] == mode
        assert metrics["test/acc"] == trained[mode][1]["test/acc"], mode
    # data overrides apply to the checkpoint's data
    ckpt, train_metrics = trained["running"]
    cfg = compose_evaluate([f"ckpt_path={ckpt}", "data.test_batch_size=7"], tmp_path / "b7",
                           cache_dir)  # fmt: skip
    assert evaluate(cfg)["test/acc"] == pytest.approx(train_metrics["test/acc"])
    cfg = compose_evaluate([f"ckpt_path={ckpt}", "data.num_test_per_class=5"], tmp_path / "n5",
                           cache_dir)  # fmt: skip
    assert evaluate(cfg)["num_test_images"] == 50
    # a training set smaller than a mini-batch (20 images, data.batch_size=32): nothing trains
    cfg = compose_evaluate([f"ckpt_path={ckpt}", "data.num_train_per_class=2"], tmp_path / "n2",
                           cache_dir)  # fmt: skip
    assert evaluate(cfg)["test/acc"] == pytest.approx(train_metrics["test/acc"])
    used = (tmp_path / "n5" / "config.yaml").read_text()
    # the rest is still the training run's data, not the config's defaults (500 a class)
    assert "num_train_per_class: 20" in used and "test_batch_size: 64" in used


def test_a_checkpoint_is_tested_in_the_precision_it_was_trained_in(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A bf16 run's test accuracy to the last digit (float32 tested one measured 0.4633 for
    0.4637); `trainer.precision` on the command line still chooses."""
    trained = train(compose_config([*TINY, "trainer.precision=bf16-mixed"], tmp_path, cache_dir))
    ckpt = f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"
    assert (
        evaluate(compose_evaluate([ckpt], tmp_path / "ev", cache_dir))["test/acc"]
        == trained["test/acc"]
    )
    evaluate(compose_evaluate([ckpt, "trainer.precision=32"], tmp_path / "ev32", cache_dir))
    for run, precision in (("ev", "bf16-mixed"), ("ev32", "32")):
        assert f"precision: {precision}\n" in (tmp_path / run / "config.yaml").read_text()


@pytest.mark.parametrize("module", ["src.evaluate", "src.export"])
def test_a_command_that_reads_a_checkpoint_refuses_none(tmp_path: Path, module: str) -> None:
    proc = cli_in_process("ckpt_path=null", f"hydra.run.dir={tmp_path / 'run'}", module=module)
    assert_one_line_error(proc, "ckpt_path=null", "reads a training checkpoint", code=2)
    proc = cli_in_process("ckpt_path=", f"hydra.run.dir={tmp_path / 'run'}", module=module)
    assert_one_line_error(proc, "ckpt_path='' is empty", code=2)  # was "ckpt_path=.: is a folder"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("module", "typed", "said"),
    [
        ("src.predict", "model.pool=false", "model.pool=false: predict builds the network as the "
         "checkpoint was trained (its model.* settings); leave it out"),
        ("src.export", "+model.num_filters=8", "model.num_filters: export builds the network"),
        # Hydra's hint to add the group; with it, a CPU run with accelerator: gpu in its config
        ("src.predict", "trainer=gpu", "trainer=gpu: predict has no trainer group: it would not "
         "read it"),
        ("src.export", "+trainer=gpu", "trainer: export runs on the CPU and takes no trainer"),
        # the value's "." was lost with the end of Hydra's sentence
        ("src.evaluate", "images=.", "images=.: the config has no key 'images' (did you mean "
         "tags?): evaluate would not read it"),
    ],
)  # fmt: skip
def test_a_key_a_command_that_reads_a_checkpoint_ignores_is_not_added(
    tmp_path: Path, tiny_checkpoint: Path, module: str, typed: str, said: str
) -> None:
    """Hydra's hint to add a key with a + led to a key ignored, or to the checkpoint's refusal
    (`model.pool`), whose hint led back to the key."""
    proc = cli_in_process(f"ckpt_path={tiny_checkpoint}", typed,
                          f"hydra.run.dir={tmp_path / 'run'}", module=module)  # fmt: skip
    assert_one_line_error(proc, said, code=2)
    assert not (tmp_path / "run").exists()
