"""The network: MATLAB's layers and initialisers, and a state that only the caller changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.model.network import BatchNorm, DigitsNet, glorot_bound

LAYERS = ["input", "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3", "relu3",
          "fc", "softmax"]  # fmt: skip


def make_net(seed: int = 0) -> DigitsNet:
    torch.manual_seed(seed)
    return DigitsNet()


def test_layer_names_counts_and_output_shapes_match_the_example() -> None:
    net = make_net()
    assert [n for n, _ in net.named_children()] == LAYERS
    assert len(list(net.parameters())) == 14
    assert list(net.state) == [
        f"bn{i}.{k}" for i in (1, 2, 3) for k in ("running_mean", "running_var")
    ]
    assert all(t.shape == (20,) for t in net.state.values())
    # the whole state_dict is learnables + state + the input layer's mean image, nothing else
    assert len(net.state_dict()) == 14 + 6 + 1
    x = torch.rand(7, 1, 28, 28)
    scores, state = net.forward_with_state(x, net.state)
    assert scores.shape == (7, 10)
    assert net(x).shape == (7, 10)
    probs = net.predict(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
    # the input layer subtracts the mean image
    net.input.mean.copy_(x[0])
    assert torch.equal(net.input(x)[0], torch.zeros(1, 28, 28))


def test_pool_adds_max_pooling_before_fc() -> None:
    """model.pool=true (not in the example): fc takes 12 x 12 instead of 24 x 24 activations."""
    net = DigitsNet(pool=True)
    assert [n for n, _ in net.named_children()] == [*LAYERS[:-2], "pool", "fc", "softmax"]
    assert net.fc.in_features == 20 * 12 * 12
    x = torch.rand(7, 1, 28, 28)
    assert net.forward_with_state(x, net.state)[0].shape == net(x).shape == (7, 10)


def test_initialisers_are_matlabs_defaults() -> None:
    net = make_net()
    for name in ("conv1", "conv2", "conv3", "fc"):
        w = getattr(net, name).weight
        b = glorot_bound(w)
        fan_in = w.shape[1] * (w[0, 0].numel() if w.dim() > 2 else 1)
        fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
        assert b == (6 / (fan_in + fan_out)) ** 0.5
        assert w.abs().max() <= b
        # uniform on [-b, b]: the spread fills the interval, std = b/sqrt(3)
        assert w.abs().max() > 0.95 * b
        assert abs(w.std().item() - b / 3**0.5) < 0.1 * b
        assert torch.count_nonzero(getattr(net, name).bias) == 0
    for bn in net.batch_norms().values():
        assert torch.equal(bn.weight, torch.ones(20))  # Scale
        assert torch.equal(bn.bias, torch.zeros(20))  # Offset
        assert torch.equal(bn.running_mean, torch.zeros(20))  # TrainedMean
        assert torch.equal(bn.running_var, torch.ones(20))  # TrainedVariance


def test_new_state_is_matlabs_running_update() -> None:
    """s = decay*s_batch + (1-decay)*s, with PyTorch's unbiased batch variance (momentum=0.1)."""
    torch.manual_seed(1)
    bn = BatchNorm(3, decay=0.1)
    reference = nn.BatchNorm2d(3, momentum=0.1)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    reference.running_mean.copy_(mean)
    reference.running_var.copy_(var)
    y, new_mean, new_var = bn.forward_train(x, mean, var)
    y_ref = reference.train()(x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(new_mean, reference.running_mean)
    torch.testing.assert_close(new_var, reference.running_var)
    batch_mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(new_mean, 0.1 * batch_mean + 0.9 * mean)


def test_state_changes_only_when_the_caller_sets_it() -> None:
    net = make_net()
    x = torch.rand(4, 1, 28, 28)
    before = net(x)
    stored = {k: v.clone() for k, v in net.state.items()}
    _, new_state = net.forward_with_state(torch.rand(32, 1, 28, 28), net.state)
    for k, v in net.state.items():  # forward_with_state leaves the stored state untouched
        assert torch.equal(v, stored[k]), k
        assert not torch.equal(new_state[k], stored[k]), k
    net.state = new_state  # dlnet.State = state
    for k, v in net.state.items():
        assert torch.equal(v, new_state[k])
        assert v.data_ptr() != new_state[k].data_ptr()  # copied into the buffers, not aliased
    assert not torch.allclose(net(x), before)
    with pytest.raises(KeyError, match="do not match"):
        net.state = {"bn1.running_mean": torch.zeros(20)}  # type: ignore[assignment]
