"""Checkpoint files: written atomically, read safely, checked before a run depends on them."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.utilities import rank_zero_only


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and what is wrong."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the old one is intact."""

    def __str__(self) -> str:
        return str(self.strerror)


# What every training checkpoint of this project holds (Lightning's keys plus the model's).
REQUIRED_KEYS = ("state_dict", "optimizer_states", "loops", "global_step", "epoch")


def write_atomically(data: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, fsync it, then rename it over `path`.

    The rename is atomic because the temporary file is in the same folder (same filesystem),
    whatever `$TMPDIR` is, so `path` always holds either the previous complete checkpoint or
    the new complete one, even if the process is killed or the disk fills up mid-write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            raise CheckpointWriteError(
                err.errno,
                f"could not write checkpoint {path}: {reason}; the previous "
                "checkpoint there (if any) is intact",
            ) from err
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # not every filesystem lets a folder be fsynced; the file itself is complete


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin, writing through `write_atomically` instead of fsspec
    (whose local "atomic" save copies across filesystems when `$TMPDIR` is elsewhere)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        write_atomically(checkpoint, Path(path))

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path), map_location=map_location)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def read_checkpoint(path: Path, map_location: Any = "cpu", key: str = "ckpt_path") -> dict:
    """A training checkpoint of this project, loaded with `weights_only=True`.

    Raises CheckpointError naming `key`, the file and the fault for anything else: an empty,
    truncated or foreign file, a bare state_dict, a plain `torch.save` of something else.
    """
    where = f"{key}={path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}: the file is empty (0 bytes), not a checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # random bytes make the unpickler raise almost anything
        if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            # torch's own format, holding Python objects beyond tensors, dicts and numbers
            raise CheckpointError(
                f"{where}: holds Python objects that a safe load (weights_only=True) refuses; "
                "it was not written by this project"
            ) from err
        raise CheckpointError(
            f"{where}: cannot be read: the file is damaged, truncated or not a PyTorch "
            f"checkpoint ({_reason(err)})"
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{where}: holds a {type(data).__name__}, not a training checkpoint of this project"
        )
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(
            f"{where}: holds bare weights (a state_dict), not a training checkpoint with the "
            "optimizer and loop state; it cannot be resumed or evaluated"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing or not any(k.startswith("net.") for k in data.get("state_dict", {})):
        what = f"no {', '.join(repr(k) for k in missing)}" if missing else "no network weights"
        raise CheckpointError(f"{where}: is not a training checkpoint of this project ({what})")
    return data


def model_settings(ckpt: dict) -> dict[str, Any]:
    """The network settings a checkpoint was trained with (`model.*`)."""
    return dict(ckpt.get("hyper_parameters") or {})


def check_network_matches(ckpt: dict, model_cfg: Any, path: Path, key: str = "ckpt_path") -> None:
    """CheckpointError unless the checkpoint's network has the shape `model_cfg` builds."""
    saved = model_settings(ckpt)
    for name in ("num_filters", "num_classes"):
        want = model_cfg.get(name) if model_cfg is not None else None
        have = saved.get(name)
        if want is not None and have is not None and want != have:
            raise CheckpointError(
                f"{key}={path}: was trained with model.{name}={have}, but this run has "
                f"model.{name}={want}; a checkpoint only continues with the same network "
                f"(set model.{name}={have})"
            )


def loader_position(ckpt: dict) -> dict[str, int] | None:
    """The training data loader's saved position (EpochLoader.state_dict), if any."""
    loops = ckpt.get("loops") or {}
    states = (loops.get("fit_loop") or {}).get("state_dict", {}).get("combined_loader") or []
    return states[0] if states else None


def continue_tensorboard(ckpt_path: Path, output_dir: Path, step: int) -> dict[str, Any]:
    """Start the resumed run's TensorBoard folder with the interrupted run's events.

    The writer then opens with `purge_step`: TensorBoard hides every event of the old files at
    or after that step, so iterations logged after the checkpoint by the run that died appear
    once, from the resumed run. The old run folder is left as it was.
    """
    old = ckpt_path.resolve().parent.parent / "tensorboard"
    new = output_dir / "tensorboard"
    if rank_zero_only.rank == 0 and old.is_dir() and old.resolve() != new.resolve():
        for event_file in old.glob("events.out.tfevents.*"):
            new.mkdir(parents=True, exist_ok=True)
            shutil.copy2(event_file, new / event_file.name)
    return {"purge_step": step}
