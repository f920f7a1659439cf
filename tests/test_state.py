"""Population statistics: exact over the training set, and what the test then predicts with."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import lightning as L
import torch

from src.model.module import BNStateModule
from src.model.network import DigitsNet
from src.model.state import batch_statistics, population_statistics
from tests.conftest import fit
from tests.test_module import assert_test_accuracy_uses_the_stored_state


def direct_population(net: DigitsNet, x: torch.Tensor) -> OrderedDict:
    """Layer by layer over the whole set at once, in float64: the definition, computed plainly."""
    saved = {k: v.clone() for k, v in net.state.items()}
    out = OrderedDict()
    with torch.no_grad():
        for name, bn in net.batch_norms().items():
            h = net.features_until(x, name).double()
            n = h.numel() / h.shape[1]
            mean = h.mean(dim=(0, 2, 3))
            var = ((h - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3)) / (n - 1)
            out[f"{name}.running_mean"], out[f"{name}.running_var"] = mean, var
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
    net.state = saved
    return out


def test_population_and_batch_statistics_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    net = DigitsNet()
    x = torch.rand(300, 1, 28, 28) * (torch.rand(300, 1, 1, 1) + 0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    y = torch.randint(0, 10, (300,))
    for i in range(0, 300, 50):  # move weights and state away from their initial values
        scores, state = net.forward_with_state(x[i : i + 50], net.state)
        torch.nn.functional.cross_entropy(scores, y[i : i + 50]).backward()
        net.state = state
        opt.step()
        opt.zero_grad()
    before = {k: v.clone() for k, v in net.state.items()}
    got = population_statistics(net, lambda: x.split(64))  # uneven batches: 4x64 + 44
    want = direct_population(net, x)
    for key in want:
        torch.testing.assert_close(got[key].double(), want[key], rtol=1e-5, atol=1e-5)
    for k, v in net.state.items():  # the network's own state is left alone
        assert torch.equal(v, before[k])

    # They are not an average of batch statistics: what `torch.optim.swa_utils.update_bn`
    # computes differs; ours must not.
    averaged = OrderedDict((k, torch.zeros_like(v)) for k, v in net.state.items())
    batches = x.split(64)
    for b in batches:
        _, new = net.forward_with_state(b, net.state)
        for k, v in batch_statistics(before, new, 0.1).items():
            averaged[k] += v / len(batches)
    deepest = "bn3.running_var"
    assert not torch.allclose(averaged[deepest].double(), want[deepest], rtol=1e-3)

    # batch_statistics inverts the running update
    stats = batch_statistics(before, net.forward_with_state(x[:64], net.state)[1], 0.1)
    h = net.features_until(x[:64], "bn1")
    torch.testing.assert_close(
        stats["bn1.running_mean"], h.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4
    )


def test_population_mode_replaces_the_state_and_the_test_uses_it(cache_dir: Path, tmp_path: Path):
    trainer, model, dm = fit(cache_dir, tmp_path, bn_stats="population")
    want = direct_population(model.net, dm.train_set.images)
    for key, value in model.net.state.items():
        torch.testing.assert_close(value.double(), want[key], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(value, model.running_state[key])  # the running one is kept too
    assert_test_accuracy_uses_the_stored_state(trainer, model, dm)

    path = tmp_path / "both.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["bn_statistics"]["used"] == "population"
    for key in want:
        assert torch.equal(ckpt["state_dict"][f"net.{key}"], model.net.state[key])
        assert torch.equal(ckpt["bn_statistics"]["population"][key], model.net.state[key])
        assert torch.equal(ckpt["bn_statistics"]["running"][key], model.running_state[key])

    # A resumed run carries on from the running estimate, and its callbacks see that state.
    seen = {}

    class SeeStart(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.update({k: v.clone() for k, v in pl_module.net.state.items()})

    _, resumed, _ = fit(cache_dir, tmp_path, 3, callbacks=[SeeStart()], ckpt_path=path,
                        bn_stats="population")  # fmt: skip
    for key in want:
        assert torch.equal(seen[key], model.running_state[key])
    # and after the extra epoch it predicts with fresh population statistics again
    assert torch.equal(resumed.net.state[key], resumed.population_state[key])

    # loading for prediction keeps the population statistics the checkpoint predicts with
    loaded = BNStateModule.load_from_checkpoint(path)
    for key in want:
        assert torch.equal(loaded.net.state[key], model.net.state[key])
