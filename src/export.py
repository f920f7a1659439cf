"""`python -m src.export ckpt_path=PATH format=onnx|mat`: the trained network for other tools.

`onnx`: `model.onnx`, the network as MATLAB's `predict` runs it (N x 1 x 28 x 28 images in [0, 1]
in, the mean image subtracted inside, class probabilities out), checked with `onnx.checker` and
against PyTorch through onnxruntime. `mat`: `model.mat`, every learnable and state tensor under
the MATLAB example's layer and parameter names, in MATLAB's layout. Both write `export.json`.
"""

from __future__ import annotations

from src.errors import exit_on_signals

if __name__ == "__main__":  # Ctrl-C while the imports below run: one line too
    exit_on_signals()

import gc
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from src.checkpoint import model_settings
from src.cli import finished
from src.errors import ConfigError, DataError
from src.io import write_text
from src.model.module import BNStateModule
from src.runtime.build import (
    CheckpointData,
    checked_run,
    entry_point,
    probabilities,
    save_resolved_config,
    trained_network,
)
from src.runtime.exporters import (
    check_writable,
    mat_probabilities,
    onnx_probabilities,
    write_mat,
    write_onnx,
)

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "mat": "model.mat"}
# The images' layout the file's Info names: MATLAB's in model.mat (SSCB), PyTorch's in ONNX.
LAYOUTS = {"onnx": "N x 1 x 28 x 28", "mat": "28 x 28 x 1 x N (MATLAB's SSCB)"}
OUTPUTS = {"onnx": "N x {}", "mat": "{} x N (MATLAB's CB)"}  # what predict returns there
# What torch's TorchScript exporter (the one that needs no onnxscript) can write.
ONNX_OPSETS = (7, 20)
# batchNormalizationLayer's Epsilon: MATLAB refuses less (cuDNN's least).
MATLAB_LEAST_EPSILON = 1e-5
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
            "TorchScript exporter writes (13: see docs/predict-and-export.md for MATLAB's importer)"
        )
    # Each layer of the checkpoint's network is one the writer knows (fresh weights: types only).
    check_writable(BNStateModule(**model_settings(ckpt, cfg.ckpt_path)).net, fmt, opset)
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
# The run


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the model file and `export.json` in the run folder; return what export.json holds."""
    ckpt = checked_export(cfg)
    output_dir = save_resolved_config(cfg)

    data = CheckpointData(ckpt, cfg.paths.cache_dir, cfg.ckpt_path)  # read once, for both
    net = trained_network(cfg, ckpt, data)
    bn_stats = cfg.model.get("bn_stats") or (ckpt.get("bn_statistics") or {}).get("used", "running")
    path = output_dir / FORMATS[cfg.format]
    props = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "bn_stats": str(bn_stats),
        "input": f"images, {LAYOUTS[cfg.format]}, pixel values in [0, 1]; the mean image is inside",
        "output": f"probabilities, {OUTPUTS[cfg.format].format(net.fc.out_features)} (softmax), "
        f"classes 0-{net.fc.out_features - 1}",
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
        if (eps := min(bn.epsilon for bn in net.batch_norms().values())) < MATLAB_LEAST_EPSILON:
            log.warning(
                "Epsilon is %g, below %g, the least MATLAB's batchNormalizationLayer takes: the "
                "layers of docs/predict-and-export.md refuse it (numpy and scipy read it as is)",
                eps,
                MATLAB_LEAST_EPSILON,
            )
        other = lambda p, x: mat_probabilities(p, net, x)  # noqa: E731
    images, origin = comparison_images(data)
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
    write_text(output_dir / "export.json", json.dumps(record, indent=2) + "\n")
    finished(log, output_dir)
    return record


main, cli = entry_point(export, "export", check=checked_export)


if __name__ == "__main__":
    gc.freeze()  # what the imports made lives as long as the process: no collection walks it
    cli()
