"""Per-iteration values kept on the device and written out in blocks.

The example plots the loss and we watch the batch-norm state at every iteration. Reading one
value back from a GPU waits for all the work queued before it, so a `float(loss)` per iteration
would make the host wait for the GPU at every iteration. Values are instead recorded where they
were computed (0-d tensors, or small ones for histograms) and copied to the host in one
transfer per block of iterations, each keeping its own step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.compat import event_file_writer


@dataclass
class StepRecord:
    """What one iteration recorded: `scalars` for the loggers (host floats once taken),
    `histograms` of small tensors, and whether the loggers should receive them at all (the
    trainer's `log_every_n_steps`); the training-progress plot reads every iteration's loss."""

    step: int
    scalars: dict[str, Tensor | float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)
    to_loggers: bool = True


class StepValues:
    """A block of per-iteration records; `take()` moves them to the host in one transfer."""

    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    def __len__(self) -> int:
        return len(self.records)

    def _record(self, step: int) -> StepRecord:
        if not self.records or self.records[-1].step != step:
            self.records.append(StepRecord(step))
        return self.records[-1]

    def add(
        self, step: int, to_loggers: bool = True, copy: bool = True, **scalars: Tensor | float
    ) -> None:
        """Scalars of iteration `step`: 0-d tensors or host numbers. `copy`: keep a copy of each
        tensor, so that a buffer the next iteration reuses (a replayed CUDA graph's output)
        cannot change it; not needed for tensors computed afresh at every iteration."""
        record = self._record(step)
        record.to_loggers = record.to_loggers and to_loggers
        for key, value in scalars.items():
            if isinstance(value, Tensor):
                value = value.detach().clone() if copy else value.detach()
            record.scalars[key] = value

    def add_histogram(self, step: int, tag: str, values: Tensor, copy: bool = True) -> None:
        values = values.detach().flatten()
        self._record(step).histograms[tag] = values.clone() if copy else values

    def take(self) -> list[StepRecord]:
        """Every record so far with host values (floats, CPU tensors), and an empty block."""
        records, self.records = self.records, []
        tensors = [v for r in records for v in r.scalars.values() if isinstance(v, Tensor)]
        hists = [v for r in records for v in r.histograms.values()]
        if tensors:
            flat = torch.cat([t.float().reshape(-1) for t in tensors]).cpu().tolist()
            it = iter(flat)
            for r in records:
                for key, value in r.scalars.items():
                    if isinstance(value, Tensor):
                        r.scalars[key] = next(it)
        if hists:
            flat = torch.cat([h.float() for h in hists]).cpu()
            chunks = iter(flat.split([h.numel() for h in hists]))
            for r in records:
                for key in r.histograms:
                    r.histograms[key] = next(chunks)
        return records


def write_records(logger: Any, records: list[StepRecord]) -> None:
    """Send a block's scalars (and, to TensorBoard, its histograms) to one Lightning logger.

    TensorBoard gets one event an iteration holding all of that iteration's values: writing
    them one `add_scalar` at a time costs about ten times as much (an event each), which on
    a CPU was most of what watching the state cost. Other loggers get `log_metrics`.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    if not isinstance(logger, TensorBoardLogger):
        for record in records:
            if record.to_loggers and record.scalars:
                logger.log_metrics(record.scalars, step=record.step)
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    writer = event_file_writer(logger.experiment)
    wanted = [r for r in records if r.to_loggers]
    histograms = iter(_histograms([d for r in wanted for d in r.histograms.values()]))
    for record in wanted:
        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in record.scalars.items()]
        for tag in record.histograms:
            histogram = next(histograms)
            if histogram is not None:
                values.append(Summary.Value(tag=tag, histo=histogram))
        if values:
            writer.add_summary(Summary(value=values), record.step)


def _histograms(tensors: list[Tensor], bins: int = 10) -> list[Any]:
    """TensorBoard histograms (`bins` equal buckets from min to max) of many small tensors,
    computed together: numpy's `histogram` costs about 0.1 ms a call, which at 6 histograms an
    iteration was most of what watching the state cost on a CPU. Tensors with non-finite values,
    or of another length than the first, take the slow path."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    out: list[Any] = [None] * len(tensors)
    if not tensors:
        return out
    size = tensors[0].numel()
    rows = [i for i, t in enumerate(tensors) if t.numel() == size]
    data = torch.stack([tensors[i] for i in rows]).double().numpy()
    finite = np.isfinite(data).all(axis=1)
    ok = data[finite]
    lo, hi = ok.min(axis=1), ok.max(axis=1)
    width = np.where(hi > lo, hi - lo, 1.0)
    index = np.clip(((ok - lo[:, None]) / width[:, None] * bins).astype(np.int64), 0, bins - 1)
    counts = (index[:, :, None] == np.arange(bins)).sum(axis=1)
    steps = np.arange(1, bins + 1) / bins
    limits = np.where(hi > lo, 1.0, 0.0)[:, None] * width[:, None] * steps + lo[:, None]
    sums, squares = ok.sum(axis=1), (ok * ok).sum(axis=1)
    for j, i in enumerate(np.asarray(rows)[finite]):
        out[i] = HistogramProto(
            min=float(lo[j]), max=float(hi[j]), num=size, sum=float(sums[j]),
            sum_squares=float(squares[j]), bucket_limit=limits[j].tolist(),
            bucket=counts[j].astype(np.float64).tolist(),
        )  # fmt: skip
    for i, t in enumerate(tensors):  # the rare rest: one at a time
        if out[i] is None:
            out[i] = _histogram(t.numpy())
    return out


def _histogram(values: np.ndarray, bins: int = 10) -> Any:
    """TensorBoard's histogram of the finite values (None when there are none)."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    values = values[np.isfinite(values)].astype(np.float64)
    if values.size == 0:
        return None
    try:
        counts, edges = np.histogram(values, bins=bins)
    except ValueError:  # a diverging run's values too large to bin: RunCheckpoint stops it
        return None
    return HistogramProto(
        min=float(values.min()),
        max=float(values.max()),
        num=int(values.size),
        sum=float(values.sum()),
        sum_squares=float(np.dot(values, values)),
        bucket_limit=edges[1:].tolist(),
        bucket=counts.astype(np.float64).tolist(),
    )


def merged(records: list[StepRecord]) -> list[StepRecord]:
    """Records of the same step joined into one (the block's and others' values), in step order."""
    by_step: dict[int, StepRecord] = {}
    for record in records:
        kept = by_step.setdefault(record.step, record)
        if kept is not record:
            kept.scalars.update(record.scalars)
            kept.histograms.update(record.histograms)
            kept.to_loggers = kept.to_loggers and record.to_loggers
    return sorted(by_step.values(), key=lambda r: r.step)
