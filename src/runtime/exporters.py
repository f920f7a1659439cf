"""The trained network in other tools' formats: ONNX (`write_onnx`, read back through onnxruntime)
and MATLAB's .mat (`write_mat`, every learnable and state tensor under the example's layer names, in
MATLAB's layouts, read back by `mat_probabilities`)."""

from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.errors import ConfigError, first_line
from src.io import output_file
from src.model.network import (
    MATLAB_BN_LEARNABLE_NAMES,
    MATLAB_LEARNABLE_NAMES,
    MATLAB_STATE_NAMES,
    BatchNorm,
    DigitsNet,
    ImageInput,
)


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
    with output_file(path, "model") as tmp, warnings.catch_warnings():
        # The exporter's notice that the dynamo one is the default.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "N"}, "probabilities": {0: "N"}},
        )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"images": images})[0]


def _matlab_flatten_order(shape: tuple[int, int, int]) -> np.ndarray:
    """For an activation of C x H x W: position j of MATLAB's flattened H x W x C array
    (column-major: h fastest, then w, then c) -> its position in PyTorch's C x H x W flatten."""
    c, h, w = shape
    index = np.arange(c * h * w).reshape(c, h, w)  # PyTorch's position of (c, h, w)
    return index.transpose(1, 2, 0).reshape(-1, order="F")  # read out in MATLAB's order


def matlab_parameters(net: DigitsNet) -> dict[str, dict[str, np.ndarray]]:
    """Every learnable and state tensor by MATLAB layer and parameter name, in MATLAB's layout:
    `input.Mean` 28x28x1; convolution Weights H x W x C x F, Bias 1x1xF; batch norm Offset,
    Scale, TrainedMean, TrainedVariance 1x1xC; fully connected Weights outputs x inputs with the
    inputs in MATLAB's flattening order, Bias outputs x 1. All single precision."""

    def arr(t: Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))

    layers = {"input": {"Mean": arr(net.input.mean.permute(1, 2, 0))}}
    x = torch.zeros(1, *net.input.mean.shape)
    for name, layer in net.named_children():
        if isinstance(layer, nn.Conv2d):
            layers[name] = {
                MATLAB_LEARNABLE_NAMES["weight"]: arr(layer.weight.permute(2, 3, 1, 0)),
                MATLAB_LEARNABLE_NAMES["bias"]: arr(layer.bias.reshape(1, 1, -1)),
            }
        elif isinstance(layer, BatchNorm):
            layers[name] = {  # the order of dlnet.Learnables (Offset, Scale), then dlnet.State
                MATLAB_BN_LEARNABLE_NAMES["bias"]: arr(layer.bias.reshape(1, 1, -1)),
                MATLAB_BN_LEARNABLE_NAMES["weight"]: arr(layer.weight.reshape(1, 1, -1)),
                MATLAB_STATE_NAMES["running_mean"]: arr(layer.running_mean.reshape(1, 1, -1)),
                MATLAB_STATE_NAMES["running_var"]: arr(layer.running_var.reshape(1, 1, -1)),
            }
        elif isinstance(layer, nn.Linear):
            with torch.no_grad():
                shape = tuple(net.features_until(x, name).shape[1:])  # its input, C x H x W
            weight = layer.weight[:, torch.from_numpy(_matlab_flatten_order(shape))]
            layers[name] = {
                MATLAB_LEARNABLE_NAMES["weight"]: arr(weight),
                MATLAB_LEARNABLE_NAMES["bias"]: arr(layer.bias.reshape(-1, 1)),
            }
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


# The layer types `matlab_parameters` and `mat_probabilities` know; ImageInput and Softmax
# hold nothing to write beyond the mean image, and are applied before and after the others.
MAT_LAYERS = (ImageInput, nn.Conv2d, BatchNorm, nn.ReLU, nn.Linear, nn.Softmax)
# The network's own layer types whose export `tests/test_export.py` checks; torch's are torch's.
ONNX_LAYERS = (ImageInput, BatchNorm)


def check_writable(net: DigitsNet, fmt: str, opset: int) -> None:
    """ConfigError, one line naming the layer and its type, for a layer the format's writer does
    not know; called before anything is written. The .mat writer knows `MAT_LAYERS` (a layer it
    skipped would make a file that computes something else); the ONNX exporter knows torch's
    layers and `ONNX_LAYERS`, and tries any other alone, on its input."""
    for name, layer in net.named_children():
        if fmt == "mat" and not isinstance(layer, MAT_LAYERS):
            problem = (
                "the .mat writer does not know (it writes convolution, batch norm, ReLU and "
                "fully connected layers); use format=onnx"
            )
        elif fmt == "onnx" and not (
            isinstance(layer, ONNX_LAYERS) or type(layer).__module__.startswith("torch.")
        ):
            x = net.features_until(torch.zeros(1, *net.input.mean.shape), name)
            problem = _onnx_problem(layer, x, opset)
        else:
            continue
        if problem:
            raise ConfigError(
                f"format={fmt}: layer {name} is a {type(layer).__name__}, which {problem}"
            )


def _onnx_problem(layer: nn.Module, x: Tensor, opset: int) -> str | None:
    """Why torch's ONNX exporter cannot write `layer` alone, given `x`; None when it can."""
    sys.stdout.flush()
    stdout = os.dup(1)
    try:
        with open(os.devnull, "wb") as null, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 1)  # where the exporter prints its graph when it fails
            torch.onnx.export(layer, (x,), io.BytesIO(), dynamo=False, opset_version=opset)
    except Exception as err:  # the exporter's errors are of many types
        return f"torch's ONNX exporter cannot write at opset {opset} ({first_line(err)})"
    finally:
        os.dup2(stdout, 1)
        os.close(stdout)
    return None


def write_mat(net: DigitsNet, path: Path, props: dict[str, str]) -> None:
    """`model.mat`: a struct per layer, plus `Learnables` and `State` as columns and `Info`;
    `check_writable` has refused any layer it does not know."""
    import scipy.io

    layers = matlab_parameters(net)
    learnables = _listing(layers, state=False)
    state = _listing(layers, state=True)
    for name, layer in net.batch_norms().items():
        layers[name]["Epsilon"] = np.float64(layer.epsilon)  # batchNormalizationLayer's Epsilon
    contents = {**layers, "Learnables": learnables, "State": state, "Info": dict(props)}
    with output_file(path, "model") as tmp:
        scipy.io.savemat(str(tmp), contents, do_compression=True, oned_as="column")


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
