"""Per-iteration values kept on the device and written out in blocks.

The example plots the loss and we watch the batch-norm state at every iteration. Reading one
value back from a GPU waits for all the work queued before it, so a `float(loss)` per iteration
would make the host wait for the GPU at every iteration. Values are instead recorded where they
were computed (0-d tensors, or small ones for histograms) and copied to the host in one
transfer per block of iterations, each keeping its own step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class StepRecord:
    """What one iteration recorded: `scalars` for the loggers (host floats once taken),
    `histograms` of small tensors, and whether the loggers should receive them at all (the
    trainer's `log_every_n_steps`); the training-progress plot reads every iteration's loss."""

    step: int
    scalars: dict[str, Tensor | float] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)
    to_loggers: bool = True
    vectors: list[tuple[list[str], Tensor]] = field(default_factory=list)


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

    def add_vector(self, step: int, keys: list[str], values: Tensor, to_loggers: bool = True):
        """Scalars of iteration `step` computed together: `values[i]` is `keys[i]`'s. The
        tensor is kept as it is (one freshly computed, which nothing will overwrite)."""
        record = self._record(step)
        record.to_loggers = record.to_loggers and to_loggers
        record.vectors.append((keys, values.detach()))

    def add_histogram(self, step: int, tag: str, values: Tensor, copy: bool = True) -> None:
        values = values.detach().flatten()
        self._record(step).histograms[tag] = values.clone() if copy else values

    def take(self) -> list[StepRecord]:
        """Every record so far with host values (floats, CPU tensors), and an empty block."""
        records, self.records = self.records, []
        tensors = [v for r in records for v in r.scalars.values() if isinstance(v, Tensor)]
        tensors += [v for r in records for _, v in r.vectors]
        hists = [v for r in records for v in r.histograms.values()]
        if tensors:
            flat = torch.cat([t.float().reshape(-1) for t in tensors]).cpu().tolist()
            it = iter(flat)
            for r in records:
                for key, value in r.scalars.items():
                    if isinstance(value, Tensor):
                        r.scalars[key] = next(it)
            for r in records:
                for keys, _ in r.vectors:
                    r.scalars.update((key, next(it)) for key in keys)
                r.vectors = []
        if hists:
            flat = torch.cat([h.float() for h in hists]).cpu()
            chunks = iter(flat.split([h.numel() for h in hists]))
            for r in records:
                for key in r.histograms:
                    r.histograms[key] = next(chunks)
        return records
