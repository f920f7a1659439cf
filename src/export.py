"""`python -m src.export ckpt_path=PATH format=onnx|mat`: the trained network for other tools.

`onnx`: `model.onnx`, the network as MATLAB's `predict` runs it (N x 1 x 28 x 28 images in [0, 1]
in, the mean image subtracted inside, class probabilities out), checked with `onnx.checker` and
against PyTorch through onnxruntime. `mat`: `model.mat`, every learnable and state tensor under
the MATLAB example's layer and parameter names, in MATLAB's layout. Both write `export.json`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from torch import Tensor, nn

from src.cli import run, run_job
from src.errors import ConfigError, DataError
from src.model.network import (
    MATLAB_BN_LEARNABLE_NAMES,
    MATLAB_LEARNABLE_NAMES,
    MATLAB_STATE_NAMES,
    BatchNorm,
    DigitsNet,
)
from src.runtime.build import (
    CONFIG_DIR,
    CheckpointData,
    checked_run,
    probabilities,
    save_resolved_config,
    trained_network,
)

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "mat": "model.mat"}
# What torch's TorchScript exporter (the one that needs no onnxscript) can write.
ONNX_OPSETS = (7, 20)
# Built-in digits to compare on when the checkpoint's own data cannot be read here.
FALLBACK_PER_CLASS = 50


def checked_export(cfg: DictConfig) -> dict:
    """The check before the run folder exists: config, checkpoint, `format` and `opset`."""
    ckpt = checked_run(cfg)
    fmt = cfg.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not one of: {', '.join(FORMATS)}")
    opset = cfg.get("opset")
    low, high = ONNX_OPSETS
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise ConfigError(
            f"opset={opset!r} must be a whole number in [{low}, {high}], the ONNX opsets torch's "
            "TorchScript exporter writes (13: see the README for MATLAB's importer)"
        )
    return ckpt


def comparison_images(data: CheckpointData) -> tuple[np.ndarray, str]:
    """The checkpoint's test images, or built-in digits when its data cannot be read here."""
    try:
        images = data.module.test_set.images.numpy()
        return images, f"the checkpoint's {len(images)} test images ({data.module.source})"
    except (DataError, InstantiationException) as err:  # e.g. a folder on another machine
        from src.data.synthetic import generate_digits

        log.warning("Comparing on built-in digits instead: %s", err)
        images = generate_digits(FALLBACK_PER_CLASS, [0, 1]).images
        return images, f"{len(images)} built-in digits ({err})"


# ---------------------------------------------------------------------------------------------
# ONNX


class _Probabilities(nn.Module):
    """The network's own layers, named as in the network (conv1, bn1, ...), whose forward is
    `DigitsNet.predict`: the exported graph's nodes and weights then carry MATLAB's layer names."""

    def __init__(self, net: DigitsNet) -> None:
        super().__init__()
        for name, layer in net.named_children():
            self.add_module(name, layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.softmax(DigitsNet.features_until(self, x, None))  # = DigitsNet.predict


def write_onnx(net: DigitsNet, path: Path, opset: int, props: dict[str, str]) -> None:
    """`model.onnx` with torch's TorchScript exporter (`dynamo=False`: works offline, without
    onnxscript). No constant folding, so each batch-norm layer stays a BatchNormalization node
    holding its state (mean, var) instead of being folded into the convolution before it."""
    import onnx

    model = _Probabilities(net).eval()
    example = torch.zeros(2, *net.input.mean.shape)
    with warnings.catch_warnings():  # the exporter's notice that the dynamo one is the default
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "N"}, "probabilities": {0: "N"}},
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": images})[0]


# ---------------------------------------------------------------------------------------------
# MATLAB .mat


def _matlab_flatten_order(shape: tuple[int, int, int]) -> np.ndarray:
    """For an activation of C x H x W: position j of MATLAB's flattened H x W x C array
    (column-major: h fastest, then w, then c) -> its position in PyTorch's C x H x W flatten."""
    c, h, w = shape
    index = np.arange(c * h * w).reshape(c, h, w)  # PyTorch's position of (c, h, w)
    return index.transpose(1, 2, 0).reshape(-1, order="F")  # read out in MATLAB's order


def matlab_parameters(net: DigitsNet) -> OrderedDict[str, OrderedDict[str, np.ndarray]]:
    """Every learnable and state tensor by MATLAB layer and parameter name, in MATLAB's layout:
    `input.Mean` 28x28x1; convolution Weights H x W x C x F, Bias 1x1xF; batch norm Offset,
    Scale, TrainedMean, TrainedVariance 1x1xC; fully connected Weights outputs x inputs with the
    inputs in MATLAB's flattening order, Bias outputs x 1. All single precision."""

    def arr(t: Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))

    layers: OrderedDict[str, OrderedDict[str, np.ndarray]] = OrderedDict()
    layers["input"] = OrderedDict(Mean=arr(net.input.mean.permute(1, 2, 0)))
    x = torch.zeros(1, *net.input.mean.shape)
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d):
            layers[name] = OrderedDict(
                [
                    (MATLAB_LEARNABLE_NAMES["weight"], arr(layer.weight.permute(2, 3, 1, 0))),
                    (MATLAB_LEARNABLE_NAMES["bias"], arr(layer.bias.reshape(1, 1, -1))),
                ]
            )
        elif isinstance(layer, BatchNorm):
            layers[name] = OrderedDict(
                [  # the order of dlnet.Learnables (Offset, Scale), then dlnet.State
                    (MATLAB_BN_LEARNABLE_NAMES["bias"], arr(layer.bias.reshape(1, 1, -1))),
                    (MATLAB_BN_LEARNABLE_NAMES["weight"], arr(layer.weight.reshape(1, 1, -1))),
                    (MATLAB_STATE_NAMES["running_mean"], arr(layer.running_mean.reshape(1, 1, -1))),
                    (MATLAB_STATE_NAMES["running_var"], arr(layer.running_var.reshape(1, 1, -1))),
                ]
            )
        elif isinstance(layer, nn.Linear):
            with torch.no_grad():
                shape = tuple(net.features_until(x, name).shape[1:])  # its input, C x H x W
            weight = layer.weight[:, torch.from_numpy(_matlab_flatten_order(shape))]
            layers[name] = OrderedDict(
                [
                    (MATLAB_LEARNABLE_NAMES["weight"], arr(weight)),
                    (MATLAB_LEARNABLE_NAMES["bias"], arr(layer.bias.reshape(-1, 1))),
                ]
            )
    return layers


_STATE = set(MATLAB_STATE_NAMES.values())


def _listing(layers: dict[str, dict[str, np.ndarray]], state: bool) -> dict[str, np.ndarray]:
    """dlnet.Learnables or dlnet.State as a struct of columns (`struct2table` makes the table)."""
    rows = [
        (layer, param, value)
        for layer, params in layers.items()
        if layer != "input"
        for param, value in params.items()
        if (param in _STATE) == state
    ]
    values = np.empty((len(rows), 1), dtype=object)
    for i, (_, _, value) in enumerate(rows):
        values[i, 0] = value
    return {
        "Layer": np.array([[r[0]] for r in rows], dtype=object),
        "Parameter": np.array([[r[1]] for r in rows], dtype=object),
        "Value": values,
    }


def write_mat(net: DigitsNet, path: Path, props: dict[str, str]) -> None:
    """`model.mat`: a struct per layer, plus `Learnables` and `State` as columns and `Info`."""
    import scipy.io

    layers = matlab_parameters(net)
    for name, layer in net.batch_norms().items():
        layers[name]["Epsilon"] = np.float64(layer.epsilon)  # batchNormalizationLayer's Epsilon
    contents: dict[str, Any] = {k: dict(v) for k, v in layers.items()}
    plain = {k: {p: v for p, v in ps.items() if p != "Epsilon"} for k, ps in layers.items()}
    contents["Learnables"] = _listing(plain, state=False)
    contents["State"] = _listing(plain, state=True)
    contents["Info"] = dict(props)
    scipy.io.savemat(str(path), contents, do_compression=True, oned_as="column")


def _mat_field(contents: dict, layer: str, param: str) -> Tensor:
    return torch.from_numpy(np.asarray(contents[layer][param][0, 0], dtype=np.float32))


@torch.inference_mode()
def mat_probabilities(path: Path, net: DigitsNet, images: np.ndarray) -> np.ndarray:
    """The network's probabilities computed from `model.mat` alone, read the way a MATLAB
    dlnetwork built from it would compute them: each layer's arrays in MATLAB's layout, the
    fully connected layer applied to the activations flattened in MATLAB's column-major order.
    Only the layer order and the convolutions' padding come from `net`."""
    import scipy.io

    m = scipy.io.loadmat(str(path))
    mean = _mat_field(m, "input", "Mean")  # H x W x C (MATLAB drops a trailing 1: H x W)
    x = torch.from_numpy(images) - mean.reshape(*mean.shape[:2], -1).permute(2, 0, 1)
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d):
            w = _mat_field(m, name, "Weights").permute(3, 2, 0, 1)  # H x W x C x F -> F x C x H x W
            x = F.conv2d(x, w, _mat_field(m, name, "Bias").reshape(-1), padding=layer.padding)
        elif isinstance(layer, BatchNorm):
            mean, var, scale, offset = (
                _mat_field(m, name, p).reshape(-1)
                for p in ("TrainedMean", "TrainedVariance", "Scale", "Offset")
            )
            eps = float(np.asarray(m[name]["Epsilon"][0, 0]).reshape(-1)[0])
            x = F.batch_norm(x, mean, var, scale, offset, False, 0.0, eps)
        elif isinstance(layer, nn.ReLU):
            x = F.relu(x)
        elif isinstance(layer, nn.Linear):
            # MATLAB's H x W x C x N, flattened column-major per image: (N, C, W, H) row-major.
            flat = x.permute(0, 1, 3, 2).reshape(len(x), -1)
            x = flat @ _mat_field(m, name, "Weights").T + _mat_field(m, name, "Bias").reshape(-1)
    return torch.softmax(x, dim=1).numpy()


# ---------------------------------------------------------------------------------------------
# The run


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the model file and `export.json` in the run folder; return what export.json holds."""
    ckpt = checked_export(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, output_dir)

    net = trained_network(cfg, ckpt)
    bn_stats = cfg.model.get("bn_stats") or (ckpt.get("bn_statistics") or {}).get("used", "running")
    path = output_dir / FORMATS[cfg.format]
    props = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "bn_stats": str(bn_stats),
        "input": "images, N x 1 x 28 x 28, pixel values in [0, 1]; the mean image is inside",
        "output": f"probabilities, N x {net.fc.out_features} (softmax), classes 0-"
        f"{net.fc.out_features - 1}",
    }
    record: dict[str, Any] = {"format": cfg.format, "file": str(path)}
    if cfg.format == "onnx":
        write_onnx(net, path, cfg.opset, props)
        record.update(opset=cfg.opset, exporter="torch.onnx.export(dynamo=False), TorchScript")
        log.info("Wrote %s (ONNX opset %d); onnx.checker: passed", path, cfg.opset)
        other = onnx_probabilities
    else:
        write_mat(net, path, props)
        log.info("Wrote %s (MATLAB names and layout)", path)
        other = lambda p, x: mat_probabilities(p, net, x)  # noqa: E731
    images, origin = comparison_images(CheckpointData(ckpt, cfg.paths.cache_dir, cfg.ckpt_path))
    want = probabilities(net, images)
    got = other(path, images)
    diff = float(np.abs(got.astype(np.float64) - want).max())
    agree = int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
    reader = "onnxruntime" if cfg.format == "onnx" else "model.mat's arrays in MATLAB's layout"
    record.update(
        ckpt_path=props["checkpoint"],
        bn_stats=props["bn_stats"],
        compared_with="PyTorch (DigitsNet.predict)",
        compared_on=origin,
        num_images=len(images),
        max_abs_diff=diff,
        same_label=agree,
    )
    log.info(
        "%s vs PyTorch on %s: max |difference| of the probabilities %.3g; same label on %d/%d",
        reader,
        origin,
        diff,
        agree,
        len(images),
    )
    (output_dir / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("Outputs in %s", output_dir)
    return record


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    """CLI entry point."""
    run_job(lambda: export(cfg))


def cli() -> None:
    """`python -m src.export`: the config and checkpoint checked, then the export."""
    run(main, CONFIG_DIR, "export", check=checked_export)


if __name__ == "__main__":
    cli()
