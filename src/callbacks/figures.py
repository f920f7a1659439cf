"""Pictures people would rather look at than read: the training-progress plot and the
test set's confusion matrix, saved as PNGs in the run directory and sent to TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from src.callbacks.progress import epoch_number, hms
from src.io import output_file
from src.model.state import state_label

log = logging.getLogger(__name__)

# The example's `animatedline('Color',[0.85 0.325 0.098])`.
LOSS_COLOUR = (0.85, 0.325, 0.098)


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure drawn into memory by Agg: files and TensorBoard only, never a window, and no
    pyplot (whose backend choice would be process-wide state)."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(trainer: L.Trainer, fig: Figure, filename: str, tag: str) -> Path:
    """Write `fig` as a PNG in the run directory and, if TensorBoard logs, as image `tag`."""
    from PIL import Image

    path = Path(trainer.default_root_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    # Drawn once: the same pixels go to the file and to TensorBoard (savefig and add_figure
    # would each draw the figure again).
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    with output_file(path, "figure") as tmp:  # the suffix is .tmp.png: say the format
        Image.fromarray(rgb).save(tmp, format="PNG", dpi=(fig.dpi, fig.dpi))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, rgb, trainer.global_step, dataformats="HWC")
    return path


class TrainingProgressPlot(L.Callback):
    """At the end of training, `training_progress.png`: loss against iteration, epoch boundaries
    marked, titled "Epoch: N, Elapsed: hh:mm:ss" like the example's figure."""

    def __init__(self, filename: str = "training_progress.png") -> None:
        self.filename = filename
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.epoch_starts: list[int] = []
        self._module: L.LightningModule | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._module = pl_module

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # From the epoch number, not the current step: a run resumed mid-epoch starts there.
        start = trainer.current_epoch * trainer.num_training_batches
        if start not in self.epoch_starts:
            self.epoch_starts.append(start)

    def on_step_values(self, trainer: L.Trainer, pl_module: L.LightningModule, records) -> None:
        """Every iteration's loss, a block at a time (`BNStateModule.flush_step_values`)."""
        for record in records:
            if "train/loss" in record.scalars:
                self.iterations.append(record.step + 1)
                self.losses.append(float(record.scalars["train/loss"]))

    def _flush(self) -> None:
        if self._module is not None and hasattr(self._module, "flush_step_values"):
            self._module.flush_step_values()

    # kept in checkpoints, so a resumed run draws its whole history
    def state_dict(self) -> dict[str, Any]:
        self._flush()  # the values of iterations not yet written out belong in it too
        return {"iterations": self.iterations, "losses": self.losses, "epochs": self.epoch_starts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.iterations = list(state_dict["iterations"])
        self.losses = list(state_dict["losses"])
        self.epoch_starts = list(state_dict["epochs"])

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()
        if not self.iterations:
            return
        fig, ax = new_figure(8, 4.5)
        ax.plot(self.iterations, self.losses, color=LOSS_COLOUR, linewidth=1.2)
        for start in sorted(set(self.epoch_starts))[1:]:
            ax.axvline(start + 0.5, color="0.6", linestyle="--", linewidth=0.8)
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, max(self.iterations) + 1)
        ax.set_xlabel("Iteration")
        ax.set_ylabel("Loss")
        ax.grid(True, alpha=0.4)
        elapsed = pl_module.elapsed() if hasattr(pl_module, "elapsed") else 0.0
        ax.set_title(f"Epoch: {epoch_number(trainer)}, Elapsed: {hms(elapsed)}")
        fig.tight_layout()
        path = save_figure(trainer, fig, self.filename, "train/progress")
        log.info("Training progress plot: %s", path)


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


class ConfusionMatrixReport(L.Callback):
    """After testing, `confusion_matrix.png` in the run directory and in TensorBoard."""

    def __init__(self, filename: str = "confusion_matrix.png") -> None:
        self.filename = filename

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = getattr(pl_module, "last_confusion_matrix", None)
        if matrix is None:
            return
        stats = getattr(pl_module, "bn_stats", "running")
        label = state_label(stats, getattr(pl_module, "update_state", True))
        acc = np.trace(matrix) / max(matrix.sum(), 1)
        fig = confusion_figure(matrix, f"Test accuracy {acc:.4f} ({label})")
        path = save_figure(trainer, fig, self.filename, "test/confusion_matrix")
        log.info("Confusion matrix: %s", path)
