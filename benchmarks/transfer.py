"""How well a checkpoint trained on generated digits reads real handwriting.

    python benchmarks/transfer.py outputs/.../checkpoints/last.ckpt

scikit-learn ships 1,797 real handwritten digits (`sklearn.datasets.load_digits`: 8x8, values
0-16, from 43 writers). Each is cropped to its ink, scaled up (bicubic) so that its longer side is
20 px, the aspect ratio kept, centred on a blank 28x28 image and scaled to [0, 1]: the frame the
generated digits sit in (a 19 x 15 px median ink box). The checkpoint's network (its stored
state, as `python -m src.evaluate` uses it) predicts them; accuracy overall and per class is
printed. scikit-learn comes with the `dev` extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIDE = 28
BOX = 20  # the longer side of the ink after scaling, in pixels


def to_28x28(image: np.ndarray, box: int = BOX) -> np.ndarray:
    """One small grayscale digit (any size, values >= 0, max > 0) as a float32 28x28 image in
    [0, 1]: cropped to its ink, scaled bicubically to `box` px on its longer side, centred."""
    from PIL import Image

    x = np.asarray(image, dtype=np.float64)
    x = x / x.max()
    rows, cols = np.flatnonzero(x.any(axis=1)), np.flatnonzero(x.any(axis=0))
    x = x[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = x.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    big = Image.fromarray(x.astype(np.float32), mode="F").resize(size, Image.Resampling.BICUBIC)
    small = np.clip(np.asarray(big, dtype=np.float64), 0.0, 1.0)
    out = np.zeros((SIDE, SIDE), dtype=np.float64)
    top, left = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    # 8-bit levels like every other source; rounding also drops bicubic's faint ringing.
    return (np.round(out * 255.0) / 255.0).astype(np.float32)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as (N, 1, 28, 28) float32 images and int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.stack([to_28x28(im) for im in data.images])[:, None]
    return images, data.target.astype(np.int64)


def load_network(ckpt_path: Path) -> torch.nn.Module:
    """The checkpoint's network in prediction mode, with the state it stored."""
    from src.checkpoint import model_settings, read_checkpoint
    from src.model.module import BNStateModule

    ckpt_path = Path(ckpt_path)
    saved = read_checkpoint(ckpt_path)
    module = BNStateModule(**model_settings(saved, ckpt_path))
    module.load_state_dict(saved["state_dict"])
    return module.net.eval()


@torch.inference_mode()
def predict(net: torch.nn.Module, images: np.ndarray, batch: int = 128) -> np.ndarray:
    """Predicted class of every image, in mini-batches of `batch`."""
    x = torch.from_numpy(images)
    out = [net(x[i : i + batch]).argmax(dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def accuracy_table(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, list[float]]:
    """Accuracy over all images, and per class 0-9."""
    per_class = [float((predicted[labels == c] == c).mean()) for c in range(10)]
    return float((predicted == labels).mean()), per_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a checkpoint written by python -m src.train")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # results must not depend on the machine's core count
    images, labels = sklearn_digits()
    predicted = predict(load_network(args.ckpt), images)
    overall, per_class = accuracy_table(labels, predicted)
    print(f"sklearn digits: {len(labels)} images, accuracy {overall:.4f}")
    print("class    " + " ".join(f"{c:>5d}" for c in range(10)))
    print("accuracy " + " ".join(f"{a:5.3f}" for a in per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())
