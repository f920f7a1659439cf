"""Each iteration's loss and new batch-norm state as one row of a preallocated device tensor.

What the example plots (the loss) and what the state monitor watches (every layer's running
mean and variance) is one `torch.cat` an iteration into the block's next row: no Python object
per value, no host copy, no synchronisation. When the block is written out (every
`log_block_steps` iterations or `log_block_seconds` seconds, at each epoch end and before each
checkpoint) its rows come to the host in one transfer and everything derived from them (the
watch's averages, gaps and ratios, the histograms, whether each iteration stayed finite) is
computed there for the whole block at once, with numpy.

Under `model.cuda_graph=true` the row is written inside the captured step (`write_at_cursor`):
the row index is a device counter the graph itself moves on, so a replay launches nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from src.model.network import State
from src.model.step_values import StepRecord


class StepBlock:
    """Rows of [loss, the new state flattened] for up to `capacity` iterations, on `device`."""

    def __init__(self, capacity: int, state: State, device: torch.device) -> None:
        self.keys = list(state)  # bn1.running_mean, bn1.running_var, bn2..., in the state's order
        self.sizes = [v.numel() for v in state.values()]
        width = 1 + sum(self.sizes)
        self.rows = torch.zeros(capacity, width, device=device)
        self.cursor = torch.zeros((), dtype=torch.long, device=device)  # for captured writes
        self.start = torch.zeros(width - 1, device=device)  # the stored state the block began at
        self.n = 0
        self.steps: list[int] = []
        self.elapsed: list[float] = []
        self.lrs: list[float] = []

    @property
    def capacity(self) -> int:
        return self.rows.shape[0]

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

    def note(self, step: int, elapsed: float, lr: float | None) -> None:
        """The iteration's host values; the row is already written."""
        self.steps.append(step)
        self.elapsed.append(elapsed)
        if lr is not None:
            self.lrs.append(lr)
        self.n += 1

    def take(self) -> tuple[np.ndarray, np.ndarray, list[int], list[float], list[float]]:
        """(rows, start state) on the host, steps, elapsed times and rates; an empty block."""
        n = self.n
        both = torch.cat([self.rows[:n].reshape(-1), self.start]).cpu().numpy()
        rows = both[: n * self.rows.shape[1]].reshape(n, -1)
        start = both[n * self.rows.shape[1] :]
        taken = (rows, start, self.steps, self.elapsed, self.lrs)
        self.n, self.steps, self.elapsed, self.lrs = 0, [], [], []
        self.cursor.zero_()
        return taken


def block_records(
    block: StepBlock,
    *,
    every: int,
    decay: float,
    carried: bool,
    watch: bool,
    histograms: bool,
    lr_key: str | None,
) -> list[StepRecord]:
    """The block's iterations as records for the loggers: loss, elapsed time, learning rate,
    whether the loss and state stayed finite, and (`watch`) each layer's watch values."""
    rows, start, steps, elapsed, lrs = block.take()
    loss = rows[:, 0]
    new = rows[:, 1:].astype(np.float64)
    finite = np.isfinite(loss) & np.isfinite(new).all(axis=1)
    records = []
    for i, step in enumerate(steps):
        scalars: dict[str, float] = {"train/loss": float(loss[i]), "train/elapsed_s": elapsed[i]}
        if lr_key is not None and i < len(lrs):
            scalars[lr_key] = lrs[i]
        scalars["_finite"] = float(finite[i])
        records.append(StepRecord(step, scalars, to_loggers=(step + 1) % every == 0))
    if watch and len(steps):
        _add_watch(records, block, new, start.astype(np.float64), decay, carried, histograms)
    return records


def _add_watch(
    records: list[StepRecord],
    block: StepBlock,
    new: np.ndarray,
    start: np.ndarray,
    decay: float,
    carried: bool,
    histograms: bool,
) -> None:
    """Per layer: the stored state's averages, how far each mini-batch's statistics were from the
    state they were folded into (s_new = (1-d)*s_old + d*s_batch, so s_batch - s_old =
    (s_new - s_old)/d), and the stored state's channels as histograms."""
    stored = new if carried else np.broadcast_to(start, new.shape)
    old = np.vstack([start[None], stored[:-1]])  # what each iteration started from
    bounds = np.cumsum([0, *block.sizes])
    parts = {key: slice(bounds[j], bounds[j + 1]) for j, key in enumerate(block.keys)}
    layers = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in block.keys))  # bn1, bn2, bn3
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name in layers:
            m, v = parts[f"{name}.running_mean"], parts[f"{name}.running_var"]
            mean_avg = stored[:, m].mean(axis=1)
            var_avg = stored[:, v].mean(axis=1)
            gap = np.sqrt((((new[:, m] - old[:, m]) / decay) ** 2).mean(axis=1))
            ratio = (((new[:, v] - (1 - decay) * old[:, v]) / decay) / old[:, v]).mean(axis=1)
            for i, record in enumerate(records):
                record.scalars[f"{name}/running_mean_avg"] = float(mean_avg[i])
                record.scalars[f"{name}/running_var_avg"] = float(var_avg[i])
                record.scalars[f"{name}/batch_mean_gap"] = float(gap[i])
                record.scalars[f"{name}/batch_var_ratio"] = float(ratio[i])
                if histograms and record.to_loggers:
                    record.histograms[f"{name}/running_mean"] = torch.from_numpy(
                        stored[i, m].astype(np.float32)
                    )
                    record.histograms[f"{name}/running_var"] = torch.from_numpy(
                        stored[i, v].astype(np.float32)
                    )
