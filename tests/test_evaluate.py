"""`python -m src.evaluate`: a saved checkpoint tested again, on its own data or another's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from src.evaluate import evaluate
from src.train import train
from tests.conftest import TINY, assert_one_line_error, cli_in_process, compose_config, tb_events
from tests.test_sources import as_uint8, digits, write_idx, write_mat, write_tree


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


def test_a_test_set_alone_is_evaluated_without_any_training_data(
    trained: dict, tmp_path: Path, cache_dir: Path
) -> None:
    """A .mat holding XTest/YTest only, MNIST's t10k files only, a test/ folder only: the
    training set is read only for population statistics the checkpoint lacks."""
    test = digits(1, per_class=2)
    write_mat(tmp_path / "test.mat", test, part="Test")
    (tmp_path / "t10k").mkdir()
    write_idx(tmp_path / "t10k" / "t10k-images-idx3-ubyte", as_uint8(test.images[:, 0]), 2051)
    write_idx(tmp_path / "t10k" / "t10k-labels-idx1-ubyte", test.labels.astype(np.uint8), 2049)
    write_tree(tmp_path / "tree" / "test", test)
    ckpt, _ = trained["running"]
    sources = {
        "mat": ["data=mat", f"data.test_file={tmp_path / 'test.mat'}"],
        "mnist": ["data=mnist", f"data.root={tmp_path / 't10k'}"],
        "folder": ["data=folder", f"data.root={tmp_path / 'tree'}"],
    }
    accuracies = set()
    for name, data in sources.items():
        cfg = compose_evaluate([f"ckpt_path={ckpt}", *data], tmp_path / name, cache_dir)
        metrics = evaluate(cfg)
        assert metrics["num_test_images"] == len(test), name
        accuracies.add(metrics["test/acc"])
    assert len(accuracies) == 1  # the same 20 images each time
    # src.train train=false tests a checkpoint as src.evaluate does: on a test folder alone too.
    tested = compose_config([f"ckpt_path={ckpt}", *sources["folder"], "train=false", "trainer=cpu"],
                            tmp_path / "tested", cache_dir)  # fmt: skip
    assert train(tested)["test/acc"] in accuracies
    # Statistics to compute over the training set: that is still asked for, in one line.
    proc = cli_in_process(f"ckpt_path={ckpt}", *sources["mat"], "model.bn_stats=population",
                          f"hydra.run.dir={tmp_path / 'pop'}", module="src.evaluate")  # fmt: skip
    assert_one_line_error(proc, "data.train_file", code=2)
    assert not (tmp_path / "pop").exists()


def test_a_data_module_of_ones_own_is_set_up_as_lightning_sets_it_up() -> None:
    """A fork's LightningDataModule, whose setup takes the stage alone: asked for the test set
    alone (train=false, src.evaluate), it is set up for testing, not given `splits`."""
    import lightning as L

    from src.runtime.build import read_data

    class Own(L.LightningDataModule):
        def setup(self, stage: str) -> None:
            self.stage = stage

    own = Own()
    read_data(own, "test", test_only=True)
    assert own.stage == "test"


def test_the_thread_count_is_a_setting_as_in_training(
    ckpt: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread count a test accuracy repeats with: `num_threads=1` was refused ('evaluate
    would not read it')."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))  # restored after the test
    try:
        evaluate(compose_evaluate([f"ckpt_path={ckpt}", "num_threads=1"], tmp_path, cache_dir))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("module", "args", "said"),
    [
        *[(module, [typed], said) for module in ("src.evaluate", "src.export")
          for typed, said in (
            ("ckpt_path=null", ["ckpt_path=null", "reads a training checkpoint"]),
            ("ckpt_path=", ["ckpt_path='' is empty"]),  # was "ckpt_path=.: is a folder"
        )],
        ("src.evaluate", ["tiny_checkpoint", "trainer.limit_test_batches=0"],  # was a KeyError
         ["trainer.limit_test_batches=0 leaves no test batches to test the checkpoint on"]),
        ("src.evaluate", ["tiny_checkpoint", "+foo=1"], ["+foo=1: nothing reads a top-level foo"]),
        ("src.export", ["ckpt", "format=tflite"], ["format='tflite'", "onnx", "mat"]),
        ("src.export", ["ckpt", "opset=99"], ["opset=99", "[7, 20]"]),
        # Hydra's hint to add a key with a + led to a key ignored, or to the checkpoint's
        # refusal (`model.pool`), whose hint led back to the key
        ("src.predict", ["tiny_checkpoint", "model.pool=false"], ["model.pool=false: predict "
         "builds the network as the checkpoint was trained (its model.* settings); leave it out"]),
        ("src.export", ["tiny_checkpoint", "+model.num_filters=8"],
         ["model.num_filters: export builds the network"]),
        # Hydra's hint to add the group; with it, a CPU run with accelerator: gpu in its config
        ("src.predict", ["tiny_checkpoint", "trainer=gpu"], ["trainer=gpu: predict has no "
         "trainer group: it would not read it"]),
        ("src.export", ["tiny_checkpoint", "+trainer=gpu"],
         ["trainer: export runs on the CPU and takes no trainer"]),
        # the value's "." was lost with the end of Hydra's sentence
        ("src.evaluate", ["tiny_checkpoint", "images=."], ["images=.: the config has no key "
         "'images' (did you mean tags?): evaluate would not read it"]),
    ],
)  # fmt: skip
def test_what_a_command_that_reads_a_checkpoint_refuses_is_one_line_and_no_run_folder(
    tmp_path: Path, request: pytest.FixtureRequest, module: str, args: list[str], said: list[str]
) -> None:
    """A checkpoint (`ckpt` or `tiny_checkpoint`, the fixture named first) and what is refused."""
    if args[0] in ("ckpt", "tiny_checkpoint"):
        args = [f"ckpt_path={request.getfixturevalue(args[0])}", *args[1:]]
    proc = cli_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}", module=module)
    assert_one_line_error(proc, *said, code=2)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_path_that_is_no_checkpoint_file_is_one_line(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """A run's checkpoint folder names the checkpoint in it; a device is there, not missing; a
    plain pickle is refused without torch's two lines of warning ("please file an issue")."""
    import pickle

    (tmp_path / "plain.ckpt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tmp_path / "notes.ckpt").write_text("hello\n")  # was "... checkpoint (101)": a byte
    for typed, said in (
        (
            tiny_checkpoint.parent,
            f"is a folder, not a checkpoint file (its last one: {tiny_checkpoint})",
        ),
        ("/dev/zero", "is not a regular file"),
        (tmp_path / "plain.ckpt", "cannot be read: the file is damaged"),
    ):
        proc = cli_in_process(f"ckpt_path={typed}", f"hydra.run.dir={tmp_path / 'run'}",
                              module="src.evaluate")  # fmt: skip
        assert_one_line_error(proc, f"ckpt_path={typed}: {said}", code=2)
    proc = cli_in_process(f"ckpt_path={tmp_path / 'notes.ckpt'}", module="src.evaluate")
    assert assert_one_line_error(proc, code=2).endswith(
        "damaged, truncated or not a PyTorch checkpoint"
    )
    assert not (tmp_path / "run").exists()
