"""A checkpoint is data, never code: nothing read from one chooses what is imported or called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from src.checkpoint import model_settings, stored_data_settings
from src.errors import CheckpointError
from tests.conftest import assert_one_line_error, cli_in_process, compose_config, raised_line

VICTIM_TEXT = "a file the checkpoint must not touch\n"


def tampered(ckpt: Path, folder: Path, change: Any) -> Path:
    """A copy of `ckpt` with `change(data)` applied, saved as plain tensors, dicts and values."""
    data = torch.load(ckpt, weights_only=True)
    change(data)
    path = folder / "tampered.ckpt"
    torch.save(data, path)
    return path


def _set(path: str, value: Any):
    def change(data: dict) -> None:
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value

    return change


@pytest.fixture
def stored_target(ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A file, and a copy of `ckpt` whose stored data config, instantiated, opens it for writing
    (emptying it) before complaining about the cache_dir the entry points add: what the stored
    config did before it was checked."""
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    target = {"_target_": "logging.basicConfig", "filename": str(path), "filemode": "w",
              "force": True}  # fmt: skip
    return tampered(ckpt, tmp_path, _set("config.data", target)), path


@pytest.mark.parametrize("module", ["src.evaluate", "src.predict", "src.export"])
def test_a_stored_target_is_refused_before_anything_runs(
    tmp_path: Path, stored_target: tuple[Path, Path], module: str
) -> None:
    bad, victim = stored_target
    run_dir = tmp_path / "run"
    extra = [f"images={victim}"] if module == "src.predict" else []
    proc = cli_in_process(f"ckpt_path={bad}", f"hydra.run.dir={run_dir}", *extra, module=module)
    needles = (f"ckpt_path={bad}", "logging.basicConfig", "never code", "data._target_")
    assert_one_line_error(proc, *needles, code=2)
    assert victim.read_text() == VICTIM_TEXT
    assert not run_dir.exists()


def test_the_job_itself_never_instantiates_a_stored_target(
    tmp_path: Path, stored_target: tuple[Path, Path], cache_dir: Path
) -> None:
    """Past the command-line check too (a job started another way): refused, file intact."""
    from src.evaluate import evaluate

    bad, victim = stored_target
    cfg = compose_config([f"ckpt_path={bad}"], tmp_path / "run", cache_dir, "evaluate")
    with pytest.raises(CheckpointError, match="never code"):
        evaluate(cfg)
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (_set("config.data._target_", "os.system"), ["data._target_", "os.system"]),
        (_set("config.data._args_", ["rm -rf /"]), ["data._args_"]),
        (_set("config.data.seed", {"_target_": "os.system"}), ["data.seed", "dict"]),
        (_set("config.data.seed", "${oc.env:HOME}"), ["data.seed", "interpolation"]),
        (_set("config.data.batch_size", -3), ["data.batch_size=-3"]),
        (_set("config.data.source", "pickle"), ["data.source='pickle'"]),
        (_set("config", ["not", "settings"]), ["stored config"]),
        (_set("hyper_parameters.optimizer", {"_target_": "os.system"}), ["optimizer"]),
        # a fork's option, trained with its default: another network, not untrusted code
        (_set("hyper_parameters.gelu", False), ["model.gelu, which this network does not have"]),
        (_set("hyper_parameters.num_filters", 10**9), ["model.num_filters"]),
        (_set("hyper_parameters.num_classes", "10"), ["model.num_classes"]),
        (_set("hyper_parameters.update_state", 1), ["model.update_state"]),
        (_set("hyper_parameters.bn_stats", "${oc.env:HOME}"), ["interpolation"]),
    ],
)
def test_stored_settings_are_values_checked_like_the_config(
    ckpt: Path, tmp_path: Path, change: Any, needles: list[str]
) -> None:
    data = torch.load(tampered(ckpt, tmp_path, change), weights_only=True)

    def read() -> None:
        model_settings(data, "X")
        stored_data_settings(data, "X")

    assert raised_line(CheckpointError, read, *needles).startswith("ckpt_path=X: ")


def test_a_checkpoint_never_asks_for_a_download(ckpt: Path, tmp_path: Path) -> None:
    """Its stored data.download and data.mirrors choose no network request: only this command
    line can (data.download=true with its own mirrors)."""

    def change(data: dict) -> None:
        data["config"]["data"].update(
            source="mnist", root=str(tmp_path), download=True, mirrors=["http://example.com/"]
        )
        for key in ("num_train_per_class", "num_test_per_class", "seed", "style"):
            data["config"]["data"].pop(key, None)

    data = torch.load(tampered(ckpt, tmp_path, change), weights_only=True)
    settings = stored_data_settings(data, "X")
    assert settings["download"] is False and "mirrors" not in settings


# ---------------------------------------------------------------------------------------------
# Sweep files are data too: a sweep folder may be reused, copied or written by someone else


HOSTILE_ROWS = [
    ["not", "a", "row"],
    {"job": "abc"},
    {"job": 1, "code": 10**9},
    {"job": 1, "status": "pwned"},
    {"job": 1, "metrics": {"test/acc": "0.9; rm -rf /"}},
    {"job": 1, "values": {"lr": {"nested": "object"}}},
    {"job": 1, "overrides": "lr=0.1"},
    {"job": 1, "wall_s": "soon"},
    {"job": True},
    {"job": 1, "metrics": {"test/acc": 0.5}, "run_dir": ["x"]},
]


@pytest.mark.parametrize("saved", HOSTILE_ROWS, ids=range(len(HOSTILE_ROWS)))
def test_a_hostile_sweep_job_file_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture, saved: Any
) -> None:
    import json

    from src.sweep.summary import STATUS_FILE, SweepSummary

    summary = SweepSummary()
    summary.sweep_id = "this-sweep"
    job = tmp_path / "1_lr=0.1"
    job.mkdir()
    if isinstance(saved, dict):
        saved = {"sweep": "this-sweep", **saved}
    (job / STATUS_FILE).write_text(json.dumps(saved))
    summary.gather(tmp_path)
    err = capsys.readouterr().err
    if isinstance(saved, list):  # not this sweep's: skipped without a word
        assert summary.rows == {} and err == ""
        return
    assert summary.rows == {}
    assert err.startswith("warning: sweep summary: ") and "not used" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "position",
    [{"batch_size": 0}, {"num_samples": "x"}, {"world_size": -1}, {"evil": 1}, {"epoch": 1.5}],
)
def test_a_hostile_loader_position_is_one_line(ckpt: Path, tmp_path: Path, position: dict) -> None:
    """batch_size=0 was a ZeroDivisionError traceback at the resume check."""

    def change(data: dict) -> None:
        loader = data["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
        loader.update(position)

    path = tampered(ckpt, tmp_path, change)
    run = tmp_path / "run"
    proc = cli_in_process(f"ckpt_path={path}", f"hydra.run.dir={run}", "trainer=cpu")
    assert_one_line_error(proc, "data loader position", code=2)
    assert not run.exists()


@pytest.mark.parametrize("history", [{"iterations": [1]}, {"iterations": "x"}, [1, 2]])
def test_a_hostile_loss_history_only_restarts_the_plot(history: Any) -> None:
    """A stored history of another shape was a KeyError traceback when the run resumed."""
    from src.model.module import BNStateModule

    module = BNStateModule()
    module.on_load_checkpoint({"history": history})
    assert module.history == {"iterations": [], "losses": [], "epochs": []}
    good = {"iterations": [1, 2], "losses": [0.5, 0.4], "epochs": [0]}
    module.on_load_checkpoint({"history": good})
    assert module.history == good
