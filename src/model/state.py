"""Batch-norm state beyond the running estimate: exact population statistics and summaries."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Literal, get_args

import torch
from torch import Tensor

from src.model.network import DigitsNet, State, process_group_size

# The states a trained network can predict with (`model.bn_stats`), as the log describes them.
BNStats = Literal["running", "population"]
BN_STATS_DESCRIPTIONS: dict[BNStats, str] = {
    "running": "the running estimates carried by the training loop",
    "population": "population statistics over the whole training set",
}
BN_STATS_MODES = get_args(BNStats)


def state_label(bn_stats: str, update_state: bool = True) -> str:
    """A few words for the state a network predicts with, for titles and result lines. With
    `model.update_state=false` the loop stored nothing, so `running` is the state it began with."""
    if bn_stats == "running" and not update_state:
        return "initial state, not carried"
    return f"{bn_stats} statistics"


def describe_state(bn_stats: str, update_state: bool = True, resumed: bool = False) -> str:
    """The state a network predicts with, as the log says it."""
    if bn_stats == "running" and not update_state:
        start = "the initial state (mean 0, variance 1)"
        if resumed:
            start = "the state the checkpoint held"
        return f"{start}: model.update_state=false, nothing was carried"
    return BN_STATS_DESCRIPTIONS[bn_stats]


@torch.no_grad()
def population_statistics(
    net: DigitsNet,
    batches: Callable[[], Iterable[Tensor]],
    device: torch.device | None = None,
    across_processes: bool = False,
) -> State:
    """The exact per-channel mean and variance of each batch-norm layer's input over a data set.

    This is what MATLAB's `trainNetwork` stores after training (not the running estimate, and not
    `torch.optim.swa_utils.update_bn`, which averages per-batch statistics). Layers are done in
    order, one pass over the data each, with the layers before already using their final
    (population) statistics, so every layer sees the inputs it will see at prediction time.

    Per-batch moments are merged in float64 (Chan et al.'s pairwise update), which is exact up to
    rounding and needs one pass. The variance is stored unbiased (divided by n-1), the same
    convention as PyTorch's `running_var`; with n = images x 24 x 24 values a channel, it differs
    from the biased (n) variance by under 1e-6 relative.

    `batches` returns a fresh iterable of image batches each time it is called.
    The network's own state is left as it was; the result is returned.

    `across_processes` (DDP): `batches` gives this process's shard of the data; each layer's
    moments are merged over all processes before the next layer, so every process returns the
    same statistics of the whole data set. Every process must call it (it communicates).
    """
    saved = clone_state(net.state)
    result: State = OrderedDict()
    try:
        for name, bn in net.batch_norms().items():
            count = 0
            mean = torch.zeros(bn.num_channels, dtype=torch.float64, device=device)
            m2 = torch.zeros_like(mean)
            for x in batches():
                if device is not None:
                    x = x.to(device)
                # In float32 whatever the run's precision (trainer.precision=bf16-mixed).
                with torch.autocast(x.device.type, enabled=False):
                    h = net.features_until(x, name).double().transpose(0, 1).flatten(1)  # C x N
                mean_b = h.mean(dim=1)
                m2_b = ((h - mean_b[:, None]) ** 2).sum(dim=1)
                count, mean, m2 = _merge(count, mean, m2, h.shape[1], mean_b, m2_b)
            if across_processes:
                count, mean, m2 = _merge_over_processes(count, mean, m2)
            if count < 2:
                raise ValueError("population statistics need at least two values a channel")
            var = m2 / (count - 1)
            result[f"{name}.running_mean"] = mean.to(bn.running_mean.dtype)
            result[f"{name}.running_var"] = var.to(bn.running_var.dtype)
            # the next layers must see this layer normalised with its final statistics
            bn.running_mean.copy_(result[f"{name}.running_mean"])
            bn.running_var.copy_(result[f"{name}.running_var"])
    finally:
        net.state = saved
    return result


def _merge_over_processes(count: int, mean: Tensor, m2: Tensor) -> tuple[int, Tensor, Tensor]:
    """Every process's (count, mean, M2) merged with the same pairwise update, in rank order,
    so the result is the same on every process; unchanged without a process group."""
    world = process_group_size()
    if world == 1:
        return count, mean, m2
    mine = torch.cat([torch.tensor([float(count)], dtype=mean.dtype, device=mean.device), mean, m2])
    everyone = [torch.empty_like(mine) for _ in range(world)]
    torch.distributed.all_gather(everyone, mine)
    channels = mean.shape[0]
    count, mean, m2 = 0, torch.zeros_like(mean), torch.zeros_like(m2)
    for part in everyone:
        n_b = int(part[0].item())
        if n_b == 0:
            continue
        count, mean, m2 = _merge(count, mean, m2, n_b, part[1 : 1 + channels], part[1 + channels :])
    return count, mean, m2


def _merge(
    count: int, mean: Tensor, m2: Tensor, n_b: int, mean_b: Tensor, m2_b: Tensor
) -> tuple[int, Tensor, Tensor]:
    """(count, mean, M2) of two parts together: Chan et al.'s pairwise update."""
    delta = mean_b - mean
    total = count + n_b
    return total, mean + delta * (n_b / total), m2 + m2_b + delta**2 * (count * n_b / total)


def clone_state(state: State) -> State:
    """A detached copy, safe to keep while the network trains on."""
    return OrderedDict((k, v.detach().clone()) for k, v in state.items())


def batch_statistics(old: State, new: State, decay: float) -> State:
    """The mini-batch statistics folded into `new`: s_new = (1-d)*s_old + d*s_batch, solved."""
    return OrderedDict((k, (new[k] - (1 - decay) * old[k]) / decay) for k in new)


def states_equal(a: State, b: State) -> bool:
    """True when every tensor of `a` equals its counterpart in `b` exactly."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)
