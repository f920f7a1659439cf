"""Pictures people would rather look at than read: the training-progress plot, the test set's
confusion matrix and the first training batch, saved as PNGs in the run directory and sent to
TensorBoard. Plain functions the entry points call once, after training or testing: a
callback would be called by Lightning at every hook of every iteration."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from src.callbacks.progress import epoch_number, hms
from src.data.digit_stats import image_grid
from src.io import output_file
from src.model.state import state_label

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, after training: not at start-up
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# The example's `animatedline('Color',[0.85 0.325 0.098])`.
LOSS_COLOUR = (0.85, 0.325, 0.098)


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure drawn into memory by Agg: files and TensorBoard only, never a window, and no
    pyplot (whose backend choice would be process-wide state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(trainer: L.Trainer, fig: Figure, filename: str, tag: str) -> Path:
    """Write `fig` as a PNG in the run directory and, if TensorBoard logs, as image `tag`."""
    # Drawn once: the same pixels go to the file and to TensorBoard (savefig and add_figure
    # would each draw the figure again).
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return save_image(trainer, rgb, filename, tag, trainer.global_step, fig.dpi)


def save_image(
    trainer: L.Trainer, image: np.ndarray, filename: str, tag: str, step: int, dpi: float = 0
) -> Path:
    """Write `image` (H x W grey or H x W x 3) as a PNG in the run directory and, if TensorBoard
    logs, as image `tag` at `step`."""
    from PIL import Image

    path = Path(trainer.default_root_dir) / filename
    with output_file(path, "figure") as tmp:  # the suffix is .tmp.png: say the format
        Image.fromarray(image).save(tmp, format="PNG", dpi=(dpi, dpi) if dpi else None)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC"[: image.ndim])
    return path


@rank_zero_only
def training_progress(trainer: L.Trainer, module: L.LightningModule) -> None:
    """`training_progress.png`: loss against iteration, epoch boundaries marked, titled
    "Epoch: N, Elapsed: hh:mm:ss" like the example's figure (`module.history`, kept in
    checkpoints: a resumed run draws its whole history)."""
    history = module.history
    if not history["iterations"]:
        return
    fig, ax = new_figure(8, 4.5)
    ax.plot(history["iterations"], history["losses"], color=LOSS_COLOUR, linewidth=1.2)
    for start in sorted(set(history["epochs"]))[1:]:
        ax.axvline(start + 0.5, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, max(history["iterations"]) + 1)
    ax.set_xlabel("Iteration")
    ax.set_ylabel("Loss")
    ax.grid(True, alpha=0.4)
    ax.set_title(f"Epoch: {epoch_number(trainer)}, Elapsed: {hms(module.elapsed())}")
    fig.tight_layout()
    path = save_figure(trainer, fig, "training_progress.png", "train/progress")
    log.info("Training progress plot: %s", path)


@rank_zero_only
def first_batch(trainer: L.Trainer, module: L.LightningModule) -> None:
    """`first_batch.png` and `train/first_batch`: the run's first training batch as an image
    grid, what the network is actually shown (`module.first_batch`, noted by its first step)."""
    if module.first_batch is None:
        return
    images, step = module.first_batch
    images = images.detach().float().cpu().numpy()
    grid = image_grid(images, columns=math.ceil(math.sqrt(len(images))))
    path = save_image(trainer, grid, "first_batch.png", "train/first_batch", step)
    log.info("First training batch: %s", path)


def confusion_figure(matrix: np.ndarray, title: str) -> Figure:
    """A labelled confusion matrix, counts in the cells, per-class accuracy on the right."""
    n = matrix.shape[0]
    fig, ax = new_figure(7, 6)
    ax.imshow(matrix, cmap="Blues")
    peak = matrix.max() if matrix.size else 0
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                colour = "white" if matrix[i, j] > peak / 2 else "black"
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color=colour,
                        fontsize=8)  # fmt: skip
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    rows = matrix.sum(axis=1)
    per_class = np.divide(np.diag(matrix), rows, out=np.zeros(n), where=rows > 0)
    ax.text(n - 0.3, -0.75, "per class", va="center", fontsize=8)
    for i, acc in enumerate(per_class):
        ax.text(n - 0.3, i, f"{acc:.1%}", va="center", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


@rank_zero_only
def confusion_matrix(trainer: L.Trainer, module: L.LightningModule) -> None:
    """After testing, `confusion_matrix.png` in the run directory and in TensorBoard."""
    matrix = getattr(module, "last_confusion_matrix", None)
    if matrix is None:
        return
    label = state_label(module.bn_stats, module.update_state)
    acc = np.trace(matrix) / max(matrix.sum(), 1)
    fig = confusion_figure(matrix, f"Test accuracy {acc:.4f} ({label})")
    path = save_figure(trainer, fig, "confusion_matrix.png", "test/confusion_matrix")
    log.info("Confusion matrix: %s", path)
