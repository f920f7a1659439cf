"""Lightning's own floor: the plain loop's step in a bare manual-optimization LightningModule.

The same network, data (resident on the device), batch size, SGDM and iteration count as
`benchmarks/plain_loop.py`, inside a `Trainer` with no logger, callbacks, progress bar or
checkpoints: what any LightningModule pays for Lightning's loop and hooks, and so the least the
project's module can cost. `benchmarks/bench.py` times it beside the plain loop and the project.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Checkpoint

from src.model.network import DigitsNet


class ShuffledBatches:
    """The plain loop's batches: floor(N / B) a epoch, a new permutation each epoch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


class FloorModule(L.LightningModule):
    """The plain loop's step, as Lightning's GAN example writes a manual-optimization step."""

    def __init__(self, net: DigitsNet, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.lr, self.momentum = net, lr, momentum

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        scores, state = self.net.forward_with_state(x, self.net.state)
        loss = F.cross_entropy(scores, y)
        opt.zero_grad()
        self.manual_backward(loss)
        self.net.state = state
        opt.step()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)


def fit(
    net: DigitsNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    callbacks: list[L.Callback],
) -> None:
    """Train `net` for `epochs` in a bare Trainer on the device `images` are on."""
    trainer = L.Trainer(
        accelerator="gpu" if images.device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        # No checkpoint is written either way: a timer that subclasses Checkpoint (to run after
        # the epoch-end hooks) only stops Lightning adding its default ModelCheckpoint.
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(FloorModule(net), train_dataloaders=ShuffledBatches(images, labels, batch_size))
