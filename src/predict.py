"""`python -m src.predict ckpt_path=PATH images=PATH`: classify image files with a trained network.

`images` is one image file, a folder (its files and those of its sub-folders) or a glob pattern.
Every file goes through the reader of `data=folder` (`src.data.sources.decode_image`): the same
checks and one-line errors, the same conversions (`data.resize`, `data.grayscale`) and the same
scaling to [0, 1] as the images the network learnt from; the mean image is inside the network.
"""

from __future__ import annotations

import copy
import csv
import functools
import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from src import entry
from src.checkpoint import stored_data_settings
from src.data.arrays import IMAGE_SIZE
from src.data.datamodule import DigitsDataModule
from src.data.sources import decode_image, is_junk
from src.errors import ConfigError, DataError
from src.evaluate import build_model, checked_checkpoint
from src.model.network import DigitsNet
from src.train import CONFIG_DIR

log = logging.getLogger(__name__)

# The `data=folder` settings that apply to image files; any other data.KEY is refused.
DATA_KEYS = ("resize", "grayscale")
# Images a forward pass (memory, not results: every image is predicted on its own statistics).
BATCH = 1024
# Rows of the table printed to the log; predictions.csv holds them all.
SHOWN = 10


def checked_run(cfg: DictConfig, data_keys: Sequence[str] = ()) -> dict:
    """`src.evaluate.checked_checkpoint` for a command that builds no data module or trainer:
    the same one-line refusals (unset or unresolvable keys, bad `model.bn_stats`, a missing,
    damaged or foreign checkpoint), then the checkpoint itself."""
    data = OmegaConf.select(cfg, "data", default=None) or {}
    for key in data:
        if key not in data_keys:
            allowed = " and ".join(f"data.{k}" for k in data_keys)
            takes = f"only {allowed}" if data_keys else "no data settings"
            raise ConfigError(f"data.{key}: {cfg.task_name} takes {takes}")
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        # What check_config asks of a training config, neither of them built here: a data
        # module reading image files with these settings, and a one-process CPU trainer.
        raw = OmegaConf.to_container(data, resolve=False) if data else {}
        probe.data = {"_target_": "src.data.datamodule.DigitsDataModule", "source": "folder", **raw}
        probe.trainer = {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu"}
    return checked_checkpoint(probe)


class CheckpointData:
    """The data of the checkpoint's training run (its stored `data` settings), read on first use.

    Stands in for the data module `src.evaluate.build_model` takes: it reads the training images
    only to compute population statistics the checkpoint does not hold.
    """

    def __init__(self, ckpt: dict, cache_dir: str | Path, path: str | Path = "?") -> None:
        self.ckpt = ckpt
        self.cache_dir = cache_dir
        self.path = path

    @functools.cached_property
    def module(self) -> Any:
        stored = stored_data_settings(self.ckpt, self.path)  # checked values, never code
        if stored is None:
            raise DataError("the checkpoint records no data settings: its images are unknown")
        # This machine's cache, not the training machine's.
        datamodule = DigitsDataModule(**{**stored, "cache_dir": str(self.cache_dir)})
        try:
            datamodule.setup("fit")
        except DataError as err:
            raise DataError(f"the checkpoint's data cannot be read here: {err}") from err
        return datamodule

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # its construction failed with an AttributeError: no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def trained_network(cfg: DictConfig, ckpt: dict) -> DigitsNet:
    """The checkpoint's network in prediction mode, with the statistics `model.bn_stats` picks."""
    data = CheckpointData(ckpt, cfg.paths.cache_dir, cfg.ckpt_path)
    model = build_model(ckpt, Path(cfg.ckpt_path), cfg.model.get("bn_stats"), data)
    return model.net.eval()


# ---------------------------------------------------------------------------------------------
# The image files


def _folder_files(folder: str) -> list[str]:
    """Every file in `folder` and its sub-folders (name order, a folder's own files first),
    skipping what `data=folder` skips: hidden names, Thumbs.db, desktop.ini, __MACOSX."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        found += [os.path.join(root, n) for n in sorted(names) if not is_junk(n)]
    return found


def image_files(spec: Any) -> list[str]:
    """The files `images` names (one value or a list): a file; a folder's files, sub-folders
    included; or what a glob pattern matches (`**` spans folders), a matched folder's files too.
    DataError naming `images` when a value names nothing."""
    specs = list(spec) if OmegaConf.is_list(spec) or isinstance(spec, (list, tuple)) else [spec]
    files: list[str] = []
    for item in specs:
        text = "" if item is None else str(item).strip()
        if not text:
            raise DataError("images is not set: add images=PATH (a file, a folder or a glob)")
        path = os.path.expanduser(text)
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            found = _folder_files(path)
            if not found:
                raise DataError(f"images={text}: the folder holds no files")
            files += found
        elif glob.has_magic(path):
            matches = sorted(glob.glob(path, recursive=True))
            found = []
            for match in matches:
                if os.path.isdir(match):
                    found += _folder_files(match)
                elif not is_junk(os.path.basename(match)):
                    found.append(match)
            if not found:
                raise DataError(f"images={text}: no files match this pattern")
            files += found
        else:
            raise DataError(f"images={text}: no such file or folder")
    return list(dict.fromkeys(files))  # a file named twice is predicted once


@functools.lru_cache(maxsize=1)
def _decoded(stamped: tuple[tuple[str, int, int], ...], resize: bool, grayscale: bool) -> Any:
    """The files decoded as one N x 1 x 28 x 28 float32 array. Cached on each file's size and
    modification time, so the run reuses what the check before it read, unless a file changed."""
    images = np.empty((len(stamped), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, (path, _, _) in enumerate(stamped):
        images[i, 0] = decode_image(path, resize, grayscale)
    return images


def read_images(cfg: DictConfig) -> tuple[list[str], np.ndarray]:
    """The files `images` names and their pixels, read as `data=folder` reads its images."""
    files = image_files(cfg.images)
    stamped = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError as err:  # e.g. a broken link a pattern matched
            raise DataError(f"{path}: cannot be read ({err.strerror})") from err
        stamped.append((path, st.st_size, st.st_mtime_ns))
    return files, _decoded(tuple(stamped), bool(cfg.data.resize), bool(cfg.data.grayscale))


def checked_inputs(cfg: DictConfig) -> None:
    """The check before the run folder exists: the config, the checkpoint and every image."""
    checked_run(cfg, DATA_KEYS)
    try:
        read_images(cfg)
    except DataError as err:  # entry.cli turns ConfigError into the one line and exit code 2
        raise ConfigError(str(err)) from err


# ---------------------------------------------------------------------------------------------
# The run


@torch.inference_mode()
def probabilities(net: DigitsNet, images: np.ndarray) -> np.ndarray:
    """MATLAB's `predict(dlnet, X)`: class probabilities with the stored state, N x classes."""
    x = torch.from_numpy(images)
    return torch.cat([net.predict(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]).numpy()


def table(files: list[str], labels: np.ndarray, probs: np.ndarray) -> str:
    """The first SHOWN predictions as aligned text, and how many there are in all."""
    shown = files[:SHOWN]
    width = max(len("file"), *(len(f) for f in shown))
    lines = [f"{'file':<{width}}  predicted  probability"]
    for i, name in enumerate(shown):
        lines.append(f"{name:<{width}}  {labels[i]:>9d}  {probs[i, labels[i]]:>11.4f}")
    more = len(files) - len(shown)
    lines.append(f"({len(files)} images" + (f"; {more} more in predictions.csv)" if more else ")"))
    return "\n".join(lines)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image, write `predictions.csv` in the run folder; return files, labels and
    probabilities."""
    ckpt = checked_run(cfg, DATA_KEYS)
    files, images = read_images(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = {k: v for k, v in cfg.items() if k != "hydra"}
    OmegaConf.save(OmegaConf.create(resolved), output_dir / "config.yaml", resolve=True)

    net = trained_network(cfg, ckpt)
    probs = probabilities(net, images)
    labels = probs.argmax(axis=1)
    classes = probs.shape[1]
    with open(output_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", *(f"prob_{k}" for k in range(classes))])
        for name, label, p in zip(files, labels, probs):
            # str(np.float32): the shortest text that reads back as the same float32
            writer.writerow([name, int(label), *(str(v) for v in p)])
    log.info("Predictions of %s:\n%s", cfg.ckpt_path, table(files, labels, probs))
    log.info("Outputs in %s", output_dir)
    return {"files": files, "labels": labels, "probabilities": probs}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    """CLI entry point."""
    entry.run_job(lambda: predict(cfg))


def cli() -> None:
    """`python -m src.predict`: the config, checkpoint and images checked, then the run."""
    entry.cli(main, CONFIG_DIR, "predict", check=checked_inputs)


if __name__ == "__main__":
    cli()
