"""`python -m src.export`: ONNX and MATLAB .mat files that compute what the trained network does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from src.checkpoint import read_checkpoint
from src.errors import ConfigError
from src.export import export
from src.model.network import DigitsNet
from src.runtime.exporters import check_writable
from tests.conftest import assert_one_line_error, cli_in_process, compose_config
from tests.test_sources import digits

LAYERS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc")


def run_export(ckpt: Path, fmt: str, out: Path, cache_dir: Path) -> dict:
    cfg = compose_config([f"ckpt_path={ckpt}", f"format={fmt}"], out, cache_dir, "export")
    record = export(cfg)
    assert json.loads((out / "export.json").read_text()) == record
    return record


def test_onnx_round_trip(ckpt: Path, net: DigitsNet, tmp_path: Path, cache_dir: Path) -> None:
    record = run_export(ckpt, "onnx", tmp_path, cache_dir)
    path = tmp_path / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert record["opset"] == 13 and [o.version for o in model.opset_import] == [13]
    ops = [n.op_type for n in model.graph.node]
    # the state is in the file as batch-norm layers, not folded into the convolutions
    assert ops == ["Sub", *["Conv", "BatchNormalization", "Relu"] * 3, "Flatten", "Gemm", "Softmax"]
    assert {"bn1.running_mean", "bn3.running_var", "input.mean"} <= {
        i.name for i in model.graph.initializer
    }
    assert record["num_images"] == 100 and record["same_label"] == 100
    assert record["max_abs_diff"] < 1e-5

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = digits(1, per_class=2).images
    for batch in (images[:1], images[:7], images):  # the batch axis is dynamic
        (got,) = session.run(["probabilities"], {"images": batch})
        with torch.no_grad():
            want = net.predict(torch.from_numpy(batch)).numpy()
        assert got.shape == (len(batch), 10)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def field(m: dict, layer: str, param: str) -> np.ndarray:
    return m[layer][param][0, 0]


def test_mat_round_trip(ckpt: Path, net: DigitsNet, tmp_path: Path, cache_dir: Path) -> None:
    record = run_export(ckpt, "mat", tmp_path, cache_dir)
    assert record["max_abs_diff"] < 1e-5 and record["same_label"] == record["num_images"]
    m = scipy.io.loadmat(str(tmp_path / "model.mat"))
    assert {"input", *LAYERS, "Learnables", "State", "Info"} <= set(m)
    assert "images, 28 x 28 x 1 x N (MATLAB's SSCB)" in str(m["Info"]["input"][0, 0])
    assert "probabilities, 10 x N (MATLAB's CB)" in str(m["Info"]["output"][0, 0])
    f, classes, side = 20, 10, 24

    # names, shapes and values against the checkpoint's tensors
    mean = field(m, "input", "Mean")
    assert mean.shape == (28, 28, 1) and mean.dtype == np.float32
    np.testing.assert_array_equal(mean[:, :, 0], net.input.mean[0].numpy())
    for name, c in (("conv1", 1), ("conv2", f), ("conv3", f)):
        conv = getattr(net, name)
        k = conv.kernel_size[0]
        w, b = field(m, name, "Weights"), field(m, name, "Bias")
        assert w.shape == (k, k, c, f) and b.shape == (1, 1, f)
        # MATLAB's Weights(i, j, c, n) is PyTorch's weight[n, c, i, j]
        np.testing.assert_array_equal(w.transpose(3, 2, 0, 1), conv.weight.detach().numpy())
        np.testing.assert_array_equal(b.reshape(-1), conv.bias.detach().numpy())
    for name in ("bn1", "bn2", "bn3"):
        bn = getattr(net, name)
        for param, tensor in (("Scale", bn.weight), ("Offset", bn.bias),
                              ("TrainedMean", bn.running_mean),
                              ("TrainedVariance", bn.running_var)):  # fmt: skip
            value = field(m, name, param)
            assert value.shape == (1, 1, f), (name, param)
            np.testing.assert_array_equal(value.reshape(-1), tensor.detach().numpy())
        assert field(m, name, "Epsilon").item() == bn.epsilon
    w, b = field(m, "fc", "Weights"), field(m, "fc", "Bias")
    assert w.shape == (classes, f * side * side) and b.shape == (classes, 1)
    np.testing.assert_array_equal(b[:, 0], net.fc.bias.detach().numpy())
    # column h + 24*w + 576*c of MATLAB's (column-major H x W x C) is PyTorch's c*576 + h*24 + w
    by_cwh = w.reshape(classes, f, side, side).transpose(0, 1, 3, 2)  # [o, c, w, h] to [o, c, h, w]
    np.testing.assert_array_equal(by_cwh.reshape(classes, -1), net.fc.weight.detach().numpy())

    # the MATLAB-layout arrays, applied as MATLAB would, give the network's logits
    images = torch.from_numpy(digits(1, per_class=2).images)
    a = images - torch.from_numpy(mean).permute(2, 0, 1)
    for name in LAYERS[:-1]:
        if name.startswith("conv"):
            weight = torch.from_numpy(field(m, name, "Weights").transpose(3, 2, 0, 1).copy())
            bias = torch.from_numpy(field(m, name, "Bias").reshape(-1))
            a = F.conv2d(a, weight, bias, padding=getattr(net, name).padding)
        else:
            mu, var, scale, offset = (
                torch.from_numpy(field(m, name, p).reshape(-1))
                for p in ("TrainedMean", "TrainedVariance", "Scale", "Offset")
            )
            eps = field(m, name, "Epsilon").item()
            a = F.relu((a - mu[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
                       * scale[:, None, None] + offset[:, None, None])  # fmt: skip
    # MATLAB's activations are H x W x C x N; fullyConnectedLayer flattens each image's
    # H x W x C column-major
    hwcn = a.numpy().transpose(2, 3, 1, 0)
    logits = (w @ hwcn.reshape(-1, len(images), order="F") + b).T
    with torch.no_grad():
        want = net(images).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1  # not a comparison of near-zeros

    # the flat listings, as dlnet.Learnables and dlnet.State (struct2table in MATLAB)
    def rows(table: str) -> list[tuple[str, str]]:
        t = m[table][0, 0]
        return [(str(la[0]), str(p[0])) for la, p in zip(t["Layer"][:, 0], t["Parameter"][:, 0])]

    learnables = [(n, p) for n in LAYERS for p in (
        ("Offset", "Scale") if n.startswith("bn") else ("Weights", "Bias"))]  # fmt: skip
    assert rows("Learnables") == learnables
    assert rows("State") == [(n, p) for n in ("bn1", "bn2", "bn3")
                             for p in ("TrainedMean", "TrainedVariance")]  # fmt: skip
    values = m["Learnables"][0, 0]["Value"][:, 0]
    for (layer, param), value in zip(learnables, values):
        np.testing.assert_array_equal(value, field(m, layer, param))


def test_a_layer_the_writer_does_not_know_is_one_line_and_nothing_written(
    ckpt: Path, tmp_path: Path
) -> None:
    """A model.pool=true checkpoint: format=mat names the layer and its type, exit 2, before any
    run folder; ONNX's exporter refuses a layer it cannot write (here a made-up operator) alike."""
    saved = read_checkpoint(ckpt)
    saved["hyper_parameters"]["pool"] = True
    saved["state_dict"]["net.fc.weight"] = torch.zeros(10, 20 * 12 * 12)
    torch.save(saved, tmp_path / "pooled.ckpt")
    run = tmp_path / "run"
    proc = cli_in_process(f"ckpt_path={tmp_path}/pooled.ckpt", "format=mat",
                          f"hydra.run.dir={run}", module="src.export")  # fmt: skip
    assert_one_line_error(proc, "format=mat: layer pool is a MaxPool2d", code=2)
    assert not run.exists()

    class Bessel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.i1e(x)  # no ONNX operator for it

    net = DigitsNet()
    net.relu3 = Bessel()  # in relu3's place
    with pytest.raises(ConfigError, match="format=onnx: layer relu3 is a Bessel, which torch's"):
        check_writable(net, "onnx", 13)


def test_an_epsilon_matlab_refuses_is_said_when_exported_for_it(
    ckpt: Path, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved = read_checkpoint(ckpt)
    saved["hyper_parameters"]["bn_epsilon"] = 1e-6
    torch.save(saved, tmp_path / "eps.ckpt")
    run_export(tmp_path / "eps.ckpt", "mat", tmp_path / "out", cache_dir)
    assert (
        "Epsilon is 1e-06, below 1e-05, the least MATLAB's batchNormalizationLayer" in caplog.text
    )


def test_a_checkpoint_whose_data_is_gone_is_compared_on_built_in_digits(
    ckpt: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Its running statistics need no data: the comparison falls back, and says why without
    advising model.bn_stats=running, which the export already uses."""
    saved = read_checkpoint(ckpt)
    data = saved["config"]["data"]
    for key in ("num_train_per_class", "num_test_per_class", "seed", "style"):
        data.pop(key, None)
    data.update(source="mnist", root=str(tmp_path / "gone"))
    torch.save(saved, tmp_path / "moved.ckpt")
    record = run_export(tmp_path / "moved.ckpt", "onnx", tmp_path / "out", cache_dir)
    assert " built-in digits (the checkpoint's data cannot be read here: " in record["compared_on"]
    assert "no such folder" in record["compared_on"] and "bn_stats" not in record["compared_on"]
