"""`python -m src.predict ckpt_path=PATH images=PATH`: classify image files with a trained network.

`images` is one image file, a folder (its files and those of its sub-folders) or a glob pattern.
Every file goes through the reader of `data=folder` (`src/data/sources/image_folders.py`): the same
checks and one-line errors, the same conversions (`data.resize`, `data.grayscale`, `data.frame`
for a photo of a digit written on paper) and the same scaling to [0, 1] as the images the network
learnt from; the mean image is inside the network.
"""

from __future__ import annotations

from src.errors import exit_on_signals

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line too
    exit_on_signals()

import functools
import gc
import glob
import logging
import os
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from src.cli import finished
from src.console import text_table
from src.data.sources.image_folders import decode_images, file_stamp, is_junk
from src.errors import ConfigError, DataError
from src.io import write_csv
from src.runtime.build import (
    checked_run,
    entry_point,
    probabilities,
    save_resolved_config,
    trained_network,
)

log = logging.getLogger(__name__)

# The `data=folder` settings that apply to image files; any other data.KEY is refused.
DATA_KEYS = ("resize", "grayscale", "frame")
# Rows of the table printed to the log; predictions.csv holds them all.
SHOWN = 10


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
    for item in specs or [None]:  # images=[]: not set either
        text = "" if item is None else str(item).strip()
        if not text:
            raise DataError("images is not set: add images=PATH (a file, a folder or a glob)")
        path = os.path.expanduser(text)
        if os.path.isfile(path):
            files.append(path)
            continue
        if os.path.isdir(path):
            matches, empty = [path], "the folder holds no files"
        elif glob.has_magic(path):
            matches, empty = sorted(glob.glob(path, recursive=True)), "no files match this pattern"
        else:
            raise DataError(f"images={text}: no such file or folder")
        found = []
        for match in matches:  # a folder (named or matched): its files, sub-folders included
            if os.path.isdir(match):
                found += _folder_files(match)
            elif not is_junk(os.path.basename(match)):
                found.append(match)
        if not found:
            raise DataError(f"images={text}: {empty}")
        files += found
    return list(dict.fromkeys(files))  # a file named twice is predicted once


@functools.lru_cache(maxsize=1)
def _decoded(
    stamped: tuple[tuple[str, int, int], ...], resize: bool, grayscale: bool, frame: bool
) -> Any:
    """The files decoded as one N x 1 x 28 x 28 float32 array. Cached on each file's size and
    modification time, so the run reuses what the check before it read, unless a file changed."""
    return decode_images([path for path, _, _ in stamped], resize, grayscale, frame)


def read_images(cfg: DictConfig) -> tuple[list[str], np.ndarray]:
    """The files `images` names and their pixels, read as `data=folder` reads its images."""
    files = image_files(cfg.images)
    stamped = tuple((path, *file_stamp(path)) for path in files)  # e.g. a broken link: DataError
    data = cfg.data
    frame = bool(data.get("frame", False))
    return files, _decoded(stamped, bool(data.resize), bool(data.grayscale), frame)


def checked_inputs(cfg: DictConfig) -> None:
    """The check before the run folder exists: the config, the checkpoint and every image."""
    checked_run(cfg, DATA_KEYS)
    try:
        read_images(cfg)
    except DataError as err:  # entry.cli turns ConfigError into the one line and exit code 2
        raise ConfigError(str(err)) from err


# ---------------------------------------------------------------------------------------------
# The run


def table(files: list[str], labels: np.ndarray, probs: np.ndarray) -> str:
    """The first SHOWN predictions as aligned text, and how many there are in all."""
    cells = [[f, str(k), f"{p[k]:.4f}"] for f, k, p in zip(files[:SHOWN], labels, probs)]
    shown = text_table(["file", "predicted", "probability"], cells, {1, 2}, indent="", rule="")
    more = len(files) - len(cells)
    return (
        shown
        + f"\n({len(files)} image{'s' * (len(files) != 1)}"
        + (f"; {more} more in predictions.csv)" if more else ")")
    )


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every image, write `predictions.csv` in the run folder; return files, labels and
    probabilities."""
    ckpt = checked_run(cfg, DATA_KEYS)
    files, images = read_images(cfg)
    output_dir = save_resolved_config(cfg)

    net = trained_network(cfg, ckpt)
    probs = probabilities(net, images)
    labels = probs.argmax(axis=1)
    header = ["file", "predicted", *(f"prob_{k}" for k in range(probs.shape[1]))]
    # str(np.float32): the shortest text that reads back as the same float32
    rows = [[name, int(label), *map(str, p)] for name, label, p in zip(files, labels, probs)]
    write_csv(output_dir / "predictions.csv", header, rows)
    log.info("Predictions of %s:\n%s", cfg.ckpt_path, table(files, labels, probs))
    finished(log, output_dir)
    return {"files": files, "labels": labels, "probabilities": probs}


main, cli = entry_point(predict, "predict", check=checked_inputs)


if __name__ == "__main__":
    gc.freeze()  # what the imports made lives as long as the process: no collection walks it
    cli()
