"""The folders a run writes into (its run or sweep folder, a checkpoint folder given apart, an
MLflow database's) can be created, and a single run's holds no earlier run's results: checked
before Hydra makes any, so a bad one costs one line."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.config.rules import hydra_runtime, refuse_tilde
from src.config.schema import value_at
from src.console import hydra_quoted
from src.errors import ConfigError, first_line


def _probe_folder(folder: Any, said: str, what: str) -> None:
    """Create `folder` and its missing parents for real, then remove what this created; where
    that fails, ConfigError `said: cannot create the <what> (<path>: <reason>)`."""
    missing = []
    existing = Path(os.path.abspath(str(folder)))  # relative to the working directory, as Hydra
    while not os.path.exists(existing):
        missing.append(existing)
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        for path in reversed(missing):
            path.mkdir()
        if not missing:  # Hydra writes into a run folder that already exists: try writing there too
            missing.append(Path(tempfile.mkdtemp(dir=existing)))
    except OSError as err:
        named = err.filename and str(err.filename) in map(str, [existing, *missing])
        where = f"{err.filename}: " if named else ""
        raise ConfigError(f"{said}: cannot create the {what} ({where}{err.strerror})") from err
    finally:
        for path in missing:  # deepest first; one a failed mkdir never made is not there
            with contextlib.suppress(OSError):  # someone else wrote there meanwhile: leave it
                path.rmdir()


def check_output_folder(cfg: DictConfig, multirun: bool) -> None:
    """Raise ConfigError unless the folder Hydra is about to create (run or sweep) can be made."""

    if multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN:
        key, what = "hydra.sweep.dir", "sweep folder"
    else:
        key, what = "hydra.run.dir", "run folder"
    try:
        folder = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception as err:  # resolvers raise anything; OmegaConf wraps most of it
        raise ConfigError(f"{key}: cannot be resolved ({first_line(err)})") from err
    if folder is None or not str(folder).strip():
        raise ConfigError(f"{key} must be set to the folder the run writes into")
    refuse_tilde(key, folder)
    _probe_folder(folder, f"{key}={folder}", what)


def check_checkpoint_folder(cfg: DictConfig) -> None:
    """A checkpoint folder given outside the run folder (`callbacks.model_checkpoint.dirpath`)
    can be created: its first save would otherwise fail after the first epoch's training."""
    node = OmegaConf.select(cfg, "callbacks.model_checkpoint", default=None)
    if not isinstance(node, DictConfig) or OmegaConf.is_interpolation(node, "dirpath"):
        return  # the default, ${paths.output_dir}/checkpoints: the run folder's, probed already
    folder = node.get("dirpath")
    if folder is not None:
        _probe_folder(folder, f"callbacks.model_checkpoint.dirpath={folder}", "checkpoint folder")


def check_logger_folders(cfg: DictConfig) -> None:
    """Each logger's folder is one of its own: a `name`, `version` or `sub_dir` of `..` would
    write into another run's folder. Each MLflow logger's store can be opened in the run:
    MLflow 3 keeps a file store (`file:` or a plain path) only with MLFLOW_ALLOW_FILE_STORE=true
    set, and a database's folder must be one this process can create and write (else minutes of
    retries, then a traceback)."""
    for name, node in (OmegaConf.select(cfg, "logger", default=None) or {}).items():
        for part in ("name", "version", "sub_dir") if isinstance(node, DictConfig) else ():
            try:  # ${oc.env:X} too; what only Hydra's run resolves (${hydra:...}) is its own
                value = node.get(part)
            except Exception:
                continue
            if isinstance(value, str) and (os.path.isabs(value) or ".." in Path(value).parts):
                raise ConfigError(f"logger.{name}.{part}={value}: leaves its logger's folder "
                                  f"(logger.{name}.save_dir): give a plain name")  # fmt: skip
        if not node or not str(node.get("_target_", "")).endswith("MLFlowLogger"):
            continue
        key = f"logger.{name}.tracking_uri"
        try:  # null: the environment's, else Lightning's file store in save_dir (./mlruns)
            uri = OmegaConf.select(cfg, key, default=None) or os.environ.get("MLFLOW_TRACKING_URI")
            save_dir = OmegaConf.select(cfg, f"logger.{name}.save_dir", default=None) or "./mlruns"
            uri = str(uri or f"file:{save_dir}")
        except Exception:  # a value of Hydra's run, unknown before it: the run opens the store
            continue
        scheme = uri.split(":", 1)[0] if re.match(r"[a-z][a-z0-9+.-]+:", uri) else ""
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
        if scheme in ("", "file") and not allowed:
            raise ConfigError(
                f"{key}={uri}: MLflow keeps runs in files only with MLFLOW_ALLOW_FILE_STORE=true "
                "set (its file store is deprecated); use a database, as logger=mlflow does: "
                f"{key}=sqlite:///PATH/mlflow.db"
            )
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if scheme == "sqlite" and uri.removeprefix("sqlite:///") not in ("", ":memory:"):
            _probe_folder(folder, f"{key}={uri}", f"database in {folder}")


def check_run_folder_free(cfg: DictConfig) -> None:
    """A single run into the folder of an earlier one (a `hydra.run.dir` given again) would
    overwrite its files: refused before it does, unless it is a training run that continues the
    folder's `last.ckpt` (its `ckpt_path`)."""
    from lightning.pytorch.utilities import rank_zero_only

    # DDP: Lightning's processes run the command line again, into the run folder rank 0 made;
    # torchrun's or srun's start at once, any of them first
    launched = "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("SLURM_NTASKS", 1)) > 1
    if "hydra" not in cfg or rank_zero_only.rank != 0 or launched:
        return
    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).absolute()
    last = None
    if value_at(cfg, "train") not in (False, None):  # src.train, training
        try:
            with hydra_runtime(cfg, str(run_dir)):
                folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
        except Exception:  # an interpolation only the run resolves: the folder is unknown here
            return
        last = Path(str(folder)) / "last.ckpt" if folder is not None else None
    given = cfg.get("ckpt_path")
    if last is not None and last.is_file():
        if given is not None and Path(str(given)).expanduser().resolve() == last.resolve():
            return  # continued
        inside = last.resolve().is_relative_to(run_dir.resolve())
        key = "hydra.run.dir" if inside else "callbacks.model_checkpoint.dirpath"
        raise ConfigError(
            f"{last} holds the checkpoint of an earlier run in this folder, which this run would "
            f"overwrite: continue it with ckpt_path={hydra_quoted(last)}, or give this run another "
            f"folder ({key})"
        )
    # An earlier run's results (a start stopped before any is run over, as it was), with or
    # without Hydra's record of it (`hydra.output_subdir=null`, a copy that left dotfiles out)
    found = [
        n for n in ("metrics.json", "predictions.csv", "export.json") if (run_dir / n).is_file()
    ]
    # its checkpoints: wherever a run that Hydra recorded put them, else where runs put them
    where = "**/*.ckpt" if (run_dir / ".hydra").is_dir() else "checkpoints/*.ckpt"
    found += [str(p.relative_to(run_dir)) for p in run_dir.glob(where)]
    if found:
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds an earlier run (its {found[0]}), whose files this run "
            "would overwrite: give this run another folder"
        )
