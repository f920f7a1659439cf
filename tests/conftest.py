"""Shared fixtures: the real Hydra config, composed in-process and shrunk to a seconds-long run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Two pytest workers share the cores: torch in this process and in the commands the tests start
# runs one thread unless a test sets its own count, so that two workers' runs do not
# oversubscribe the cores (on 2 cores the suite took 6 min 42 s with torch's default, 5 min 39 s
# so). Set before torch is imported; an OMP_NUM_THREADS already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L  # noqa: E402
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A run small enough for a unit test: 20 images per class, batches of 32, one epoch on the CPU.
TINY = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "data.num_train_per_class=20",
    "data.num_test_per_class=10",
    "data.batch_size=32",
    "data.test_batch_size=64",
]


def pytest_configure(config: pytest.Config) -> None:
    """What each entry point's command line sets up first (resolvers, MLflow's environment),
    for the configs the tests compose and run in-process."""
    from src.cli import setup

    setup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests first: the two workers (`--dist loadfile`) take a file at a time, so
    a long file started last would leave one worker waiting on the other at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: each file's order is kept


def composed(overrides: list[str], config_name: str = "config") -> DictConfig:
    """The config as preflight sees it: composed (Hydra's part too), no Hydra runtime set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def compose_config(
    overrides: list[str], output_dir: Path, cache_dir: Path, config_name: str = "config"
) -> DictConfig:
    """The config `python -m src.train` (or the entry point of `config_name`) would compose,
    with outputs and caches under tmp."""
    cfg = composed(overrides, config_name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the session, so tiny datasets are generated once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_cfg(tmp_path: Path, cache_dir: Path) -> DictConfig:
    return compose_config(TINY, tmp_path / "run", cache_dir)


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m src.train ARGS` as a user runs it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(
    proc: subprocess.CompletedProcess, *needles: str, code: int | None = None
) -> str:
    """A failed run (exit `code`, if given) that says why in one `error: ...` line naming
    `needles`, no traceback."""
    assert proc.returncode != 0 and code in (None, proc.returncode), proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def raised_line(kind: type[Exception], call: Callable[[], object], *needles: str) -> str:
    """The one-line message of the `kind` that `call` raises; it must contain every needle."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


def assert_last_line_error(
    proc: subprocess.CompletedProcess, *needles: str, code: int | None = None
) -> str:
    """A run that failed once under way (exit `code`, if given): its last stderr line is the one
    `error: ...` line naming `needles` (Lightning's start-up lines may come before it), and no
    traceback."""
    assert proc.returncode != 0 and code in (None, proc.returncode), proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return errors[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (summary.csv, seeds.csv, the CSV logger's)."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table_jobs(stdout: str, title: str) -> list[str]:
    """The job numbers of the printed sweep summary table, top to bottom."""
    jobs = []
    for line in stdout[stdout.index(title) :].splitlines()[4:]:  # title, folder, header, ---
        if not line.split() or not line.split()[0].isdigit():
            break
        jobs.append(line.split()[0])
    return jobs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_in_process(*args: str, module: str = "src.train") -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` run in this process, for inputs refused before any run starts.

    The same `cli()` a user's command calls, without the few seconds of a new interpreter
    importing torch and Lightning; `run_cli` keeps the real-process path tested.
    """
    import contextlib
    import importlib
    import io

    entry_point = importlib.import_module(module)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    argv, sys.argv = sys.argv, [module, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            entry_point.cli()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # a multirun's job mode would outlive it
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def fit(
    cache_dir: Path,
    tmp_path: Path,
    epochs: int = 2,
    *,
    callbacks: tuple[L.Callback, ...] | list[L.Callback] = (),
    module: type | None = None,
    datamodule: type | None = None,
    data: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    ckpt_path: Path | None = None,
    **module_args: Any,
) -> tuple[L.Trainer, Any, Any]:
    """A tiny fit in this process, outside the CLI: TINY's data, seed 0, no logger and no
    checkpoint (resumed from `ckpt_path` if given); the trainer, module and data module it
    leaves. `module`/`datamodule` replace the project's classes, `data`/`trainer` add their
    arguments, the rest go to the module."""
    from src.data.datamodule import DigitsDataModule
    from src.model.module import BNStateModule

    L.seed_everything(0, verbose=False)
    dm = (datamodule or DigitsDataModule)(batch_size=32, cache_dir=cache_dir,
                                          num_train_per_class=20, num_test_per_class=10,
                                          **(data or {}))  # fmt: skip
    model = (module or BNStateModule)(**module_args)
    settings = dict(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=tmp_path, callbacks=list(callbacks))  # fmt: skip
    fitted = L.Trainer(**{**settings, **(trainer or {})})
    fitted.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return fitted, model, dm


@pytest.fixture(scope="session")
def small_fit(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> tuple[L.Trainer, Any, Any]:
    """`fit` with its defaults (2 epochs), one a session: tests read it, none changes its
    weights or state."""
    return fit(cache_dir, tmp_path_factory.mktemp("fit"))


def tb_events(folder: Path):
    """A TensorBoard event folder read back whole (every scalar, histogram and image)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    return EventAccumulator(str(folder), size_guidance=guidance).Reload()


class Crash(L.Callback):
    """Stands in for a kill: the process dies after iteration `at`, saving nothing more."""

    class Died(Exception):
        pass

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise Crash.Died


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny training run's last checkpoint (one a session, which no test may change); its
    metrics.json lies in the run folder, `ckpt.parents[1]`."""
    from src.train import train

    run = tmp_path_factory.mktemp("train")
    train(compose_config([*TINY, "logger=none"], run, cache_dir))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def net(ckpt: Path):
    """The checkpoint's network, loaded directly (not through the code under test)."""
    from src.checkpoint import model_settings, read_checkpoint
    from src.model.module import BNStateModule

    saved = read_checkpoint(ckpt)
    module = BNStateModule(**model_settings(saved))
    module.load_state_dict(saved["state_dict"])
    return module.net.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A sound checkpoint of a tiny run, stopped mid-epoch at iteration 3 of 6 (one a session)."""
    from src.train import train

    run = tmp_path_factory.mktemp("tiny")
    cfg = compose_config([*TINY, "test=false", "callbacks.model_checkpoint.every_n_train_steps=3"],
                         run, cache_dir)  # fmt: skip
    with open_dict(cfg):
        cfg.callbacks.crash = {"_target_": "tests.conftest.Crash", "at": 4}
    with pytest.raises(Crash.Died):
        train(cfg)
    return run / "checkpoints" / "last.ckpt"
