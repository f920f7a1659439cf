"""The Lightning loop: MATLAB's sgdmupdate, the state update line, and step counting."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from src.callbacks.bn_state import BatchNormStateMonitor
from src.model.module import BNStateModule
from tests.conftest import fit


def sgdmupdate(w, g, v, lr, momentum):
    """MATLAB's formula, written out: v = momentum*v - lr*g; w = w + v."""
    v = momentum * v - lr * g
    return w + v, v


def test_torch_sgd_is_matlabs_sgdmupdate_and_the_default_optimizer() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    grads = [torch.randn(5, 3, dtype=torch.float64) for _ in range(6)]
    w_matlab, v = w0.clone(), torch.zeros_like(w0)  # velocity = [] starts at 0
    p = torch.nn.Parameter(w0.clone())
    opt = torch.optim.SGD([p], lr=0.01, momentum=0.9, dampening=0, nesterov=False)
    for g in grads:
        w_matlab, v = sgdmupdate(w_matlab, g, v, 0.01, 0.9)
        p.grad = g.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), w_matlab, rtol=0, atol=1e-15)
    # MATLAB's velocity is -lr times PyTorch's momentum buffer
    torch.testing.assert_close(opt.state[p]["momentum_buffer"] * -0.01, v, rtol=0, atol=1e-15)
    # the module's default optimizer is that SGD with the example's values
    opt = BNStateModule().configure_optimizers()
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 0)
    assert (group["dampening"], group["nesterov"]) == (0, False)


def assert_test_accuracy_uses_the_stored_state(trainer: L.Trainer, model, dm) -> None:
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    x, y = dm.test_set.images, dm.test_set.labels
    with torch.no_grad():
        acc = (model.net(x).argmax(1) == y).float().mean().item()
    assert result["test/acc"] == pytest.approx(acc, abs=1e-6)


def test_state_update_line_moves_the_state(small_fit) -> None:
    trainer, model, dm = small_fit  # update_state=True: the default
    init = model.net.initial_state()
    for k, v in model.net.state.items():
        assert not torch.allclose(v, init[k]), k
    # global_step counts optimizer steps: floor(200/32) = 6 batches x 2 epochs
    assert trainer.global_step == 12
    # the mean image of the input layer is the training set's
    torch.testing.assert_close(model.net.input.mean, dm.mean_image)
    # model.bn_stats=running (the default) predicts with the running estimate itself
    assert model.population_state is None
    for key, value in model.net.state.items():
        assert torch.equal(value, model.running_state[key])
    assert_test_accuracy_uses_the_stored_state(trainer, model, dm)


def test_update_state_false_keeps_initial_state_and_warns_once(
    cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="src.callbacks.bn_state"):
        trainer, model, dm = fit(cache_dir, tmp_path, update_state=False,
                                 callbacks=[BatchNormStateMonitor(check_after=3)])  # fmt: skip
    init = model.net.initial_state()
    for k, v in model.net.state.items():
        assert torch.equal(v, init[k]), k
    assert trainer.global_step == 12  # the learnables were still trained
    assert_test_accuracy_uses_the_stored_state(trainer, model, dm)
    warnings = [r for r in caplog.records if "has not changed from its initial values" in r.message]
    assert len(warnings) == 1  # once, not every iteration
    assert "model.update_state=false" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_a_resumed_runs_frozen_state_is_said_to_be_the_checkpoints(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resumed at iteration 64, the state the warning speaks of is the checkpoint's, not the
    initial one (it said "initial values")."""
    model, monitor = BNStateModule(update_state=False), BatchNormStateMonitor(check_after=2)
    trainer = SimpleNamespace(global_step=64)
    monitor.on_train_start(trainer, model)  # type: ignore[arg-type]
    trainer.global_step = 66
    with caplog.at_level(logging.WARNING, logger="src.callbacks.bn_state"):
        monitor.on_train_batch_end(trainer, model, None, None, 0)  # type: ignore[arg-type]
    assert "has not changed from the checkpoint's it resumed from, so" in caplog.text


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_training_step_runs_one_forward_per_batch(tmp_path: Path) -> None:
    """An extra training-mode forward would fold the batch into the state twice."""
    torch.manual_seed(0)
    model = BNStateModule()
    x = torch.rand(16, 1, 28, 28)
    expected = model.net.forward_with_state(x, model.net.state)[1]
    calls = []
    original = model.net.forward_with_state

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    model.net.forward_with_state = counting  # type: ignore[method-assign]
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    loader = torch.utils.data.DataLoader([(x, torch.zeros(16, dtype=torch.long))], batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    assert len(calls) == 1
    for k, v in model.net.state.items():
        torch.testing.assert_close(v, expected[k])
