"""The example's network, layer for layer, with its batch-norm state carried explicitly.

MATLAB's `forward(dlnet, X)` returns the scores *and* the new state and leaves `dlnet.State` alone;
`predict(dlnet, X)` uses the stored state. `DigitsNet.forward_with_state` and `DigitsNet.forward`
are their counterparts here.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# An ordered mapping "bn1.running_mean" -> tensor; the 6 entries of MATLAB's `dlnet.State`.
State = OrderedDict[str, Tensor]

# PyTorch buffer name -> MATLAB's State parameter name, for the tables people read.
MATLAB_STATE_NAMES = {"running_mean": "TrainedMean", "running_var": "TrainedVariance"}
MATLAB_LEARNABLE_NAMES = {"weight": "Weights", "bias": "Bias"}
MATLAB_BN_LEARNABLE_NAMES = {"weight": "Scale", "bias": "Offset"}


class ImageInput(nn.Module):
    """`imageInputLayer('Mean', mean(XTrain,4))`: subtracts the stored mean image, no scaling."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__()
        # A buffer, not a learnable: it travels with checkpoints and is set from the training data.
        self.register_buffer("mean", torch.zeros(image_shape))

    def forward(self, x: Tensor) -> Tensor:
        return x - self.mean


class BatchNorm(nn.Module):
    """`batchNormalizationLayer`: learnable offset and scale, state TrainedMean/TrainedVariance.

    Unlike `nn.BatchNorm2d` it never changes its own buffers: training mode returns the new
    statistics for the caller to store (MATLAB's `dlnet.State = state`). It also keeps no
    `num_batches_tracked`, so the state is exactly MATLAB's two tensors a layer.
    """

    def __init__(
        self,
        num_channels: int,
        decay: float = 0.1,
        epsilon: float = 1e-5,
        sync_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        # MATLAB's running statistic: s = decay*s_batch + (1-decay)*s, i.e. PyTorch's momentum.
        self.decay = decay
        self.epsilon = epsilon
        # Under DDP: normalise with the statistics of the global batch (all processes together).
        self.sync_batchnorm = sync_batchnorm
        self.weight = nn.Parameter(torch.ones(num_channels))  # MATLAB: Scale
        self.bias = nn.Parameter(torch.zeros(num_channels))  # MATLAB: Offset
        self.register_buffer("running_mean", torch.zeros(num_channels))  # TrainedMean
        self.register_buffer("running_var", torch.ones(num_channels))  # TrainedVariance

    def forward_train(self, x: Tensor, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalise with the batch's statistics; return (output, new mean, new variance).

        With `sync_batchnorm` and a process group of several processes, the batch is the global
        one: the statistics of every process's mini-batch together (`_forward_train_synced`).
        """
        group_size = process_group_size() if self.sync_batchnorm else 1
        if group_size > 1:
            return self._forward_train_synced(x, mean, var)
        new_mean, new_var = mean.detach().clone(), var.detach().clone()
        # F.batch_norm updates the two tensors it is given in place, so it gets copies: the
        # layer's stored state stays as it was. The variance it folds in is the unbiased (N-1)
        # batch variance, which is what PyTorch stores as running_var.
        y = F.batch_norm(
            x, new_mean, new_var, self.weight, self.bias, True, self.decay, self.epsilon
        )
        return y, new_mean, new_var

    def _forward_train_synced(
        self, x: Tensor, mean: Tensor, var: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Synchronised batch norm on any device (torch's `SyncBatchNorm` runs on GPUs only).

        One autograd-aware all-reduce of each channel's count, sum and sum of squares (in
        float64, so E[x^2] - E[x]^2 loses nothing that matters), then the global mean and biased
        variance normalise this process's values. The gradient flows through the global
        statistics: the all-reduce's backward sums the processes' gradients, and DDP's average
        of the parameter gradients then equals the gradient of the global batch's mean loss.
        The running statistics take the unbiased global variance, exactly as `F.batch_norm`
        folds in a single process's batch.
        """
        channels = x.transpose(0, 1).flatten(1).double()  # C x values of this process
        count = torch.full_like(channels[:, 0], channels.shape[1])
        local = torch.stack((count, channels.sum(dim=1), channels.pow(2).sum(dim=1)))
        total = SummedOverProcesses.apply(local)  # 3 x C; carries autograd
        n = total[0]
        batch_mean = total[1] / n
        batch_var = (total[2] / n - batch_mean.pow(2)).clamp(min=0)  # biased: normalises
        shape = (1, -1) + (1,) * (x.dim() - 2)
        inv_std = torch.rsqrt(batch_var.float() + self.epsilon)
        scale = (inv_std * self.weight).reshape(shape)
        y = (x - batch_mean.float().reshape(shape)) * scale + self.bias.reshape(shape)
        with torch.no_grad():
            unbiased = (batch_var * n / (n - 1).clamp(min=1)).to(var.dtype)
            new_mean = (1 - self.decay) * mean + self.decay * batch_mean.to(mean.dtype)
            new_var = (1 - self.decay) * var + self.decay * unbiased
        return y, new_mean, new_var

    def forward(self, x: Tensor) -> Tensor:
        """Normalise with the stored state, as `predict` does."""
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            0.0,
            self.epsilon,
        )

    def extra_repr(self) -> str:
        sync = ", sync_batchnorm=True" if self.sync_batchnorm else ""
        return f"{self.num_channels}, decay={self.decay}, epsilon={self.epsilon}{sync}"


class SummedOverProcesses(torch.autograd.Function):
    """A tensor summed over the processes, whose gradient is the sum of theirs too: what
    `torch.distributed.nn.functional.all_reduce` does, which torch 2.13 deprecates (a
    FutureWarning in every process's log) without a public replacement that carries autograd."""

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return SummedOverProcesses.forward(ctx, grad.contiguous())


def process_group_size() -> int:
    """The number of processes in the default process group; 1 when there is none."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DigitsNet(nn.Module):
    """conv1-bn1-relu1-conv2-bn2-relu2-conv3-bn3-relu3-(pool-)fc-softmax on 28x28x1 images.

    Its `__init__` arguments are the `model.<key>` settings, typed by their annotations and
    recorded in checkpoints (docs/configuration.md, "A new network option")."""

    def __init__(
        self,
        num_classes: int = 10,
        num_filters: int = 20,
        bn_decay: float = 0.1,
        bn_epsilon: float = 1e-5,
        sync_batchnorm: bool = False,
        pool: bool = False,
    ) -> None:
        super().__init__()
        f = num_filters
        self.input = ImageInput()  # 28 x 28 x 1
        self.conv1 = nn.Conv2d(1, f, kernel_size=5)
        self.bn1 = BatchNorm(f, bn_decay, bn_epsilon, sync_batchnorm)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.bn2 = BatchNorm(f, bn_decay, bn_epsilon, sync_batchnorm)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(f, f, kernel_size=3, padding=1)
        self.bn3 = BatchNorm(f, bn_decay, bn_epsilon, sync_batchnorm)
        self.relu3 = nn.ReLU()
        side = 28 - 4  # conv1 has no padding: 28 -> 24
        if pool:  # model.pool: 2x2 max pooling before fc, which it makes 4 times smaller
            self.pool = nn.MaxPool2d(2)
            side //= 2
        self.fc = nn.Linear(f * side * side, num_classes)
        # Kept for the layer list; training uses the logits with cross-entropy, which is the
        # same loss as crossentropy(softmax(.)) and numerically safer.
        self.softmax = nn.Softmax(dim=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MATLAB's layer defaults: Glorot-uniform weights, zero biases, BN offset 0 / scale 1.
        MATLAB's 'glorot' is U(-b, b), b = sqrt(6 / (fan_in + fan_out)) with fan_in =
        kh*kw*in_channels and fan_out = kh*kw*out_channels: torch's `xavier_uniform_`."""
        for layer in (self.conv1, self.conv2, self.conv3, self.fc):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        for bn in self.batch_norms().values():
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)

    def batch_norms(self) -> OrderedDict[str, BatchNorm]:
        """The batch-norm layers by name, in network order."""
        return OrderedDict((n, m) for n, m in self.named_children() if isinstance(m, BatchNorm))

    # -- the state, as MATLAB's dlnet.State ---------------------------------------------------
    @property
    def state(self) -> State:
        """The stored state: each batch-norm layer's running mean and variance (live tensors)."""
        return OrderedDict(
            (f"{name}.{key}", getattr(bn, key))
            for name, bn in self.batch_norms().items()
            for key in ("running_mean", "running_var")
        )

    @state.setter
    def state(self, new_state: State) -> None:
        current = self.state
        if new_state.keys() != current.keys():
            raise KeyError(f"state keys {list(new_state)} do not match {list(current)}")
        with torch.no_grad():
            for key, value in new_state.items():
                current[key].copy_(value)

    def initial_state(self) -> State:
        """The state a fresh network starts from: mean 0, variance 1."""
        return OrderedDict(
            (k, torch.zeros_like(v) if k.endswith("running_mean") else torch.ones_like(v))
            for k, v in self.state.items()
        )

    # -- forward passes -----------------------------------------------------------------------
    def forward_with_state(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """MATLAB's `[Y, state] = forward(dlnet, X)`: logits and the new state; stores nothing."""
        new_state: State = OrderedDict()
        for name, layer in self.named_children():
            if name == "softmax":
                break
            if isinstance(layer, BatchNorm):
                mean_key, var_key = f"{name}.running_mean", f"{name}.running_var"
                x, new_state[mean_key], new_state[var_key] = layer.forward_train(
                    x, state[mean_key], state[var_key]
                )
            elif isinstance(layer, nn.Linear):
                x = layer(x.flatten(1))
            else:
                x = layer(x)
        return x, new_state

    def forward(self, x: Tensor) -> Tensor:
        """Logits computed with the stored state (MATLAB's `predict`, before the softmax)."""
        return self.features_until(x, None)

    def features_until(self, x: Tensor, stop: str | None) -> Tensor:
        """Run the prediction path up to (not including) layer `stop`; all layers if None."""
        for name, layer in self.named_children():
            if name == stop:
                return x
            if name == "softmax":
                break
            x = layer(x.flatten(1)) if isinstance(layer, nn.Linear) else layer(x)
        if stop is not None:
            raise KeyError(f"no layer named {stop!r}")
        return x

    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities with the stored state: MATLAB's `predict(dlnet, X)`."""
        return self.softmax(self.forward(x))


def glorot_bound(weight: Tensor) -> float:
    """The bound b of MATLAB's Glorot initialiser for a weight of this shape."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))
