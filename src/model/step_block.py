"""Each iteration's loss and new batch-norm state as one row of a preallocated device tensor,
written to the loggers a block of iterations at a time.

Reading one value back from a GPU waits for all the work queued before it, so a `float(loss)`
an iteration would make the host wait for the GPU at every iteration. What the example plots
(the loss) and what the state monitor watches (every layer's running mean and variance) is
instead one `torch.cat` an iteration into the block's next row: no host copy, no
synchronisation. When the block is written out (every `log_block_steps` iterations or
`log_block_seconds` seconds, at each epoch end and before each checkpoint) its rows come to the
host in one transfer, and everything derived from them (the watch's averages, gaps and ratios,
whether each iteration stayed finite) is computed there for the whole block at once.

Under `model.cuda_graph=true` the row is written inside the captured step (`write_at_cursor`):
the row index is a device counter the graph itself moves on, so a replay launches nothing else.

TensorBoard gets one event an iteration holding all of its values, its histograms computed for
the whole block together. `benchmarks/log_paths.py` measured this against the library's path
(`log_metrics`, an `add_scalar` a value, and `add_histogram`): 4.7 times cheaper at the default
run's 15 scalars and 6 histograms an iteration (docs/speed.md has the figures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.compat import event_file_writer
from src.model.network import State


@dataclass
class StepRecord:
    """One iteration's values for the loggers: host floats, and (the state being watched) its
    running means and variances as histograms."""

    step: int
    scalars: dict[str, float]
    histograms: dict[str, np.ndarray] = field(default_factory=dict)


class StepBlock:
    """Rows of [loss, the new state flattened] for up to `capacity` iterations, on `device`."""

    def __init__(self, capacity: int, state: State, device: torch.device) -> None:
        self.keys = list(state)  # bn1.running_mean, bn1.running_var, bn2..., in the state's order
        self.bounds = np.cumsum([0, *(v.numel() for v in state.values())])
        self.rows = torch.zeros(capacity, 1 + int(self.bounds[-1]), device=device)
        self.cursor = torch.zeros((), dtype=torch.long, device=device)  # for captured writes
        self.start = torch.zeros(int(self.bounds[-1]), device=device)  # the state it began at
        self.notes: list[tuple[int, float, float | None]] = []  # (step, elapsed, lr) a row
        self.taken_at = time.monotonic()

    @property
    def n(self) -> int:
        return len(self.notes)

    def due(self, seconds: float) -> bool:
        """Whether the block is full, or was last written out more than `seconds` ago."""
        return self.n >= self.rows.shape[0] or time.monotonic() - self.taken_at > seconds

    def begin(self, stored: State) -> None:
        """Before the block's first iteration: the state it starts from (one copy a block)."""
        torch.cat([v.reshape(-1) for v in stored.values()], out=self.start)

    def write(self, loss: Tensor, state: State) -> None:
        """The iteration's row, in one device operation."""
        torch.cat([loss.detach().reshape(1), *(v.reshape(-1) for v in state.values())],
                  out=self.rows[self.n])  # fmt: skip

    def write_at_cursor(self, loss: Tensor, state: State) -> None:
        """The same row at the device's own row counter, then the counter moved on: what a
        captured CUDA graph replays (its launches fixed, its row index not)."""
        row = torch.cat([loss.detach().reshape(1), *(v.reshape(-1) for v in state.values())])
        self.rows.index_copy_(0, self.cursor.reshape(1), row.unsqueeze(0))
        self.cursor.add_(1)

    def take(
        self, decay: float, carried: bool, watch: bool, lr_key: str | None
    ) -> tuple[list[StepRecord], str | None]:
        """The block's iterations as records (loss, elapsed time, learning rate and, `watch`,
        each layer's watch values and histograms), what first went non-finite, and an empty
        block."""
        n, notes, width = self.n, self.notes, self.rows.shape[1]
        both = torch.cat([self.rows[:n].reshape(-1), self.start]).cpu().double().numpy()
        rows, start = both[: n * width].reshape(n, width), both[n * width :]
        self.notes = []
        self.taken_at = time.monotonic()
        self.cursor.zero_()
        loss, new = rows[:, 0], rows[:, 1:]
        records = []
        for i, (step, elapsed, lr) in enumerate(notes):
            scalars = {"train/loss": float(loss[i]), "train/elapsed_s": elapsed}
            if lr_key is not None and lr is not None:
                scalars[lr_key] = lr
            records.append(StepRecord(step, scalars))
        if watch and n:
            self._watch(records, new, start, decay, carried)
        return records, self._broken(loss, new, notes)

    def _watch(
        self,
        records: list[StepRecord],
        new: np.ndarray,
        start: np.ndarray,
        decay: float,
        carried: bool,
    ) -> None:
        """Per layer: the stored state's averages, how far each mini-batch's statistics were
        from the state they were folded into (s_new = (1-d)*s_old + d*s_batch, so s_batch -
        s_old = (s_new - s_old)/d), and the stored state's channels as histograms."""
        stored = new if carried else np.broadcast_to(start, new.shape)
        old = np.vstack([start[None], stored[:-1]])  # what each iteration started from
        parts = {k: slice(self.bounds[j], self.bounds[j + 1]) for j, k in enumerate(self.keys)}
        for name in dict.fromkeys(key.rsplit(".", 1)[0] for key in self.keys):  # bn1, bn2, bn3
            m, v = parts[f"{name}.running_mean"], parts[f"{name}.running_var"]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                values = {
                    f"{name}/running_mean_avg": stored[:, m].mean(axis=1),
                    f"{name}/running_var_avg": stored[:, v].mean(axis=1),
                    f"{name}/batch_mean_gap": np.sqrt(
                        (((new[:, m] - old[:, m]) / decay) ** 2).mean(axis=1)
                    ),
                    f"{name}/batch_var_ratio": (
                        ((new[:, v] - (1 - decay) * old[:, v]) / decay) / old[:, v]
                    ).mean(axis=1),
                }
            for i, record in enumerate(records):
                record.scalars.update({key: float(value[i]) for key, value in values.items()})
                record.histograms[f"{name}/running_mean"] = stored[i, m]
                record.histograms[f"{name}/running_var"] = stored[i, v]

    def _broken(self, loss: np.ndarray, new: np.ndarray, notes: list) -> str | None:
        """'<what> at iteration N' for the block's first non-finite loss or state, else None."""
        bad = np.flatnonzero(~(np.isfinite(loss) & np.isfinite(new).all(axis=1)))
        if not len(bad):
            return None
        i = bad[0]
        what = f"the loss is {loss[i]}"
        if np.isfinite(loss[i]):
            j = int(np.searchsorted(self.bounds, np.flatnonzero(~np.isfinite(new[i]))[0], "right"))
            what = f"the batch-norm state {self.keys[j - 1]} is not finite"
        return f"{what} at iteration {notes[i][0] + 1}"


def write_records(logger: Any, records: list[StepRecord]) -> None:
    """Send a block's scalars (and, to TensorBoard, its histograms) to one Lightning logger:
    TensorBoard one event an iteration, the others `log_metrics`."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not isinstance(logger, TensorBoardLogger):
        for record in records:
            logger.log_metrics(record.scalars, step=record.step)
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    writer = event_file_writer(logger.experiment)
    made = iter(histograms([h for record in records for h in record.histograms.values()]))
    for record in records:
        values = [Summary.Value(tag=k, simple_value=v) for k, v in record.scalars.items()]
        for tag in record.histograms:
            histogram = next(made)
            if histogram is not None:  # all its values non-finite: nothing to draw
                values.append(Summary.Value(tag=tag, histo=histogram))
        writer.add_summary(Summary(value=values), record.step)


def histograms(arrays: list[Any], bins: int = 10) -> list[Any]:
    """TensorBoard histograms (`bins` equal buckets from the least to the greatest finite
    value, as numpy's `histogram` makes them) of many small arrays, computed together: one
    `np.histogram` an array cost most of what logging the state did. None for an array with
    no finite value."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    if not arrays:
        return []
    data = np.full((len(arrays), max(len(a) for a in arrays)), np.nan)
    for i, a in enumerate(arrays):  # shorter arrays padded with NaN, which is left out
        data[i, : len(a)] = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(data)
    num = finite.sum(axis=1)
    lo = np.where(finite, data, np.inf).min(axis=1)
    hi = np.where(finite, data, -np.inf).max(axis=1)
    width = np.where(hi > lo, hi - lo, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        index = np.clip(((data - lo[:, None]) / width[:, None] * bins), 0, bins - 1)
    index = np.where(finite, index, -1).astype(np.int64)
    counts = (index[:, :, None] == np.arange(bins)).sum(axis=1)
    limits = (hi > lo)[:, None] * width[:, None] * (np.arange(1, bins + 1) / bins) + lo[:, None]
    ok = np.where(finite, data, 0.0)
    sums, squares = ok.sum(axis=1), (ok * ok).sum(axis=1)
    return [
        HistogramProto(
            min=float(lo[i]), max=float(hi[i]), num=int(num[i]), sum=float(sums[i]),
            sum_squares=float(squares[i]), bucket_limit=limits[i].tolist(),
            bucket=counts[i].astype(np.float64).tolist(),
        ) if num[i] else None
        for i in range(len(arrays))
    ]  # fmt: skip
