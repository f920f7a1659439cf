"""Prints the network as MATLAB shows a dlnetwork: its layers, its learnables and its State,
before training and (the State) after it."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from src.console import text_table
from src.model.module import BNStateModule
from src.model.network import (
    MATLAB_BN_LEARNABLE_NAMES,
    MATLAB_LEARNABLE_NAMES,
    MATLAB_STATE_NAMES,
    BatchNorm,
    DigitsNet,
    State,
)
from src.model.state import state_label

log = logging.getLogger(__name__)


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    return f"{title}\n{text_table(header, rows, set(), indent='    ', rule='_')}"


def _shape(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape) + f" {str(t.dtype).removeprefix('torch.')}"


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return (
            f"Convolution  {layer.out_channels} {kh}x{kw}x{layer.in_channels}, "
            f"padding {layer.padding[0]}"
        )
    if isinstance(layer, BatchNorm):
        return f"Batch normalization  {layer.num_channels} channels"
    if isinstance(layer, nn.Linear):
        return f"Fully connected  {layer.out_features} (from {layer.in_features})"
    if isinstance(layer, nn.ReLU):
        return "ReLU"
    if isinstance(layer, nn.Softmax):
        return "Softmax"
    if hasattr(layer, "mean"):
        c, h, w = layer.mean.shape
        return f"Image input  {h}x{w}x{c}, subtracts the training set's mean image"
    return type(layer).__name__


def layers_table(net: DigitsNet) -> str:
    """MATLAB's `dlnet.Layers`."""
    rows = [[str(i), name, _describe(m)] for i, (name, m) in enumerate(net.named_children(), 1)]
    return _table(f"Layers ({len(rows)})", ["#", "Name", "Description"], rows)


def learnables_table(net: DigitsNet) -> str:
    """MATLAB's `dlnet.Learnables`."""
    rows = []
    for full, p in net.named_parameters():
        layer, key = full.rsplit(".", 1)
        names = MATLAB_BN_LEARNABLE_NAMES if layer.startswith("bn") else MATLAB_LEARNABLE_NAMES
        rows.append([layer, names[key], full, _shape(p)])
    return _table(
        f"Learnables ({len(rows)})", ["Layer", "Parameter", "PyTorch name", "Value"], rows
    )


def state_table(net: DigitsNet, state: State | None = None) -> str:
    """MATLAB's `dlnet.State` (`state`, else the network's own), each tensor's min, mean and max
    too."""
    header = ["Layer", "Parameter", "PyTorch name", "Value", "min", "mean", "max"]
    rows = []
    for full, t in (state or net.state).items():
        layer, key = full.rsplit(".", 1)
        stats = [f"{t.min().item():.4g}", f"{t.mean().item():.4g}", f"{t.max().item():.4g}"]
        rows.append([layer, MATLAB_STATE_NAMES[key], full, _shape(t), *stats])
    return _table(f"State ({len(rows)})", header, rows)


@rank_zero_only
def network_tables(net: DigitsNet, resumed: dict | None = None) -> None:
    """Before training: the layers, learnables and state of the network; resuming, the state
    training carries on from (the running estimate when the checkpoint predicted with
    population statistics)."""
    state = None
    if resumed is not None:
        weights = resumed["state_dict"]
        running = (resumed.get("bn_statistics") or {}).get("running")
        state = running or {key: weights[f"net.{key}"] for key in net.state}
    log.info(
        "\n%s\n\n%s\n\n%s",
        layers_table(net),
        learnables_table(net),
        state_table(net, state),
    )


@rank_zero_only
def state_after_training(module: BNStateModule) -> None:
    """The state again with its values, so the change is visible in the terminal."""
    log.info(
        "State after training (%s, used for prediction):\n%s",
        state_label(module.bn_stats, module.update_state),
        state_table(module.net),
    )
