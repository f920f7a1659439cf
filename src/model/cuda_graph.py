"""`model.cuda_graph=true`: the whole training step replayed as one CUDA graph.

On a GPU this network's iteration is mostly launch overhead: a few dozen small kernels, each
queued by Python. A CUDA graph records them once (forward, loss, backward, the state update and
the SGDM step) and replays them with a single launch, reading each batch from fixed input
buffers. The recipe is PyTorch's "whole network capture": a few eager warm-up iterations on a
side stream (they create the optimizer's momentum buffers and pick the convolution
algorithms), then one capture, then replays. The captured step is the same function the eager
loop runs, the explicit `self.net.state = state` line included: the state setter copies into
the layers' buffers in place, so each replay stores the new state where the next one reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collections
from torch import Tensor

Step = Callable[[Tensor, Tensor], Any]


class CudaGraphBackend:
    """Records a function as a CUDA graph and replays it."""

    def __init__(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None

    def warm_up(self, fn: Callable[[], Any]) -> Any:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture_and_run(self, fn: Callable[[], Any]) -> Any:
        """Capture `fn` (which launches nothing while captured) and run it once; returns its
        outputs, which every later replay overwrites in place."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            out = fn()
        self.graph.replay()
        return out

    def replay(self) -> None:
        assert self.graph is not None
        self.graph.replay()


class CapturedStep:
    """Call it with each batch: `warmup` eager steps, then one captured step, then replays.

    `step(x, y)` must run the whole training step on the device without waiting for it (no
    `.item()`, no host copies) and return tensors; the batch always has the same shape (the
    training loader gives full batches only). The values returned after a replay are the same
    tensors every time, updated in place: copy what must outlive the next step.
    """

    def __init__(self, step: Step, warmup: int = 3, backend: Any = None) -> None:
        self.step = step
        self.warmup = warmup
        self.backend = backend if backend is not None else CudaGraphBackend()
        self.steps_run = 0
        self.captured = False
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        self._outputs: Any = None

    def __call__(self, x: Tensor, y: Tensor) -> Any:
        self.steps_run += 1
        if self.captured:
            self._x.copy_(x)
            self._y.copy_(y)
            self.backend.replay()
            return self._outputs
        if self.steps_run <= self.warmup:
            return self.backend.warm_up(lambda: self.step(x, y))
        self._x, self._y = x.clone(), y.clone()  # the graph's input buffers
        self._outputs = self.backend.capture_and_run(lambda: self.step(self._x, self._y))
        self.captured = True
        return self._outputs


class EagerBackend:
    """The same sequence without a GPU: each "replay" runs the function again and copies its
    results into the first run's tensors, as a replayed graph overwrites its outputs. For
    checking on a CPU that the captured step trains exactly as the eager loop does."""

    def __init__(self) -> None:
        self.fn: Callable[[], Any] | None = None
        self.outputs: Any = None
        self.replays = 0

    def warm_up(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def capture_and_run(self, fn: Callable[[], Any]) -> Any:
        self.fn = fn
        self.outputs = fn()
        return self.outputs

    def replay(self) -> None:
        assert self.fn is not None
        self.replays += 1
        apply_to_collections(self.outputs, self.fn(), Tensor, Tensor.copy_)
