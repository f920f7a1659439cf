"""How well a checkpoint trained on generated digits reads real handwriting.

    python benchmarks/transfer.py outputs/.../checkpoints/last.ckpt

scikit-learn ships 1,797 real handwritten digits (`sklearn.datasets.load_digits`: 8x8, values
0-16, from 43 writers). Each is cropped to its ink, scaled up (bicubic) so that its longer side is
20 px, the aspect ratio kept, centred on a blank 28x28 image and scaled to [0, 1]: the frame the
generated digits sit in (a 19 x 15 px median ink box). The checkpoint's network (its stored
state, as `python -m src.evaluate` uses it) predicts them; accuracy overall and per class is
printed. So is its accuracy on the first 400 of them made into photos of digits written on paper
(scaled 12x, dark ink on grainy light paper, somewhere on a larger sheet), read as `python -m
src.predict` reads photos with `data.frame=true` and, for comparison, resized whole as with
`data.resize=true`. scikit-learn comes with the `dev` extra.

    python benchmarks/transfer.py --real-baseline [--mnist DIR]

is the yardstick's own calibration: the same network, trained by the example's loop
(`benchmarks/plain_loop.py`: 5 epochs, mini-batches of 128, SGDM) on real digits instead of
built-in ones, reading the real digits of another source. It trains on four fifths of
scikit-learn's digits and, with `--mnist DIR` (MNIST's IDX files, as `data=mnist data.root=DIR`
reads them), on 500 training digits a class of MNIST, and prints what each network reads: the
fifth of its own source it never saw, the other source and the built-in test set.
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

from src.data.arrays import IMAGE_SIZE  # noqa: E402
from src.data.frame import BOX, bicubic, frame_digit, frame_photo  # noqa: E402
from src.errors import CheckpointError, DataError, one_line  # noqa: E402

SIDE = IMAGE_SIZE


def to_28x28(image: np.ndarray, box: int = BOX) -> np.ndarray:
    """One small grayscale digit (any size, values >= 0, max > 0) as a float32 28x28 image in
    [0, 1]: cropped to its ink, scaled bicubically to `box` px on its longer side, centred (the
    project's `data.frame`, src/data/frame.py)."""
    return frame_digit(image, box)


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as (N, 1, 28, 28) float32 images and int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.stack([to_28x28(im) for im in data.images])[:, None]
    return images, data.target.astype(np.int64)


PHOTOS = 400  # how many of scikit-learn's digits are photographed


def resized(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    """`image` (float, [0, 1]) resized to side x side as `data.resize=true` resizes it."""
    return bicubic(image, side, side).astype(np.float32)


def photos(n: int = PHOTOS) -> tuple[list[np.ndarray], np.ndarray]:
    """scikit-learn's first `n` digits as photos of digits written on paper: scaled 12x, dark
    ink on light paper with grain, somewhere on a 200 x 160 sheet, in 8-bit levels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    sheets = []
    for digit in data.images[:n] / 16.0:
        sheet = np.zeros((200, 160))
        top, left = rng.integers(0, 200 - 96), rng.integers(0, 160 - 96)
        sheet[top : top + 96, left : left + 96] = resized(digit, 96)
        sheet = 0.88 - 0.75 * sheet + rng.normal(0.0, 0.03, sheet.shape)
        sheets.append(np.round(np.clip(sheet, 0.0, 1.0) * 255) / 255)
    return sheets, data.target[:n].astype(np.int64)


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


def per_class_sample(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """The first `n` images of each class, in their order in the set."""
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)]))
    return images[keep], labels[keep]


def photo_accuracies(network: torch.nn.Module) -> dict[str, float]:
    """The network's accuracy on `photos()`, framed as `data.frame=true` frames them and resized
    whole as `data.resize=true` resizes them."""
    sheets, labels = photos()
    read = {
        "framed (data.frame=true)": [frame_photo(sheet) for sheet in sheets],
        "resized whole (data.resize=true)": [resized(sheet) for sheet in sheets],
    }
    return {
        how: float((predict(network, np.stack(x)[:, None]) == labels).mean())
        for how, x in read.items()
    }


def real_sets(
    mnist_dir: Path | None, seed: int, sklearn: tuple[np.ndarray, np.ndarray]
) -> dict[str, tuple[np.ndarray, ...]]:
    """Each real source as (train images, train labels, unseen images, unseen labels)."""
    images, labels = sklearn
    order = np.random.default_rng(seed).permutation(len(labels))
    unseen, seen = order[: len(order) // 5], order[len(order) // 5 :]
    sets = {"sklearn": (images[seen], labels[seen], images[unseen], labels[unseen])}
    if mnist_dir is not None:
        from src.data.sources.idx import mnist

        train, test = mnist(None, root=mnist_dir)
        sets["mnist"] = (
            *per_class_sample(train.images, train.labels, 500),
            *per_class_sample(test.images, test.labels, 500),
        )
    return sets


def real_baseline(mnist_dir: Path | None, seed: int) -> list[tuple[str, dict[str, float]]]:
    """Train the example's network on each real source; what it reads of each source's unseen
    digits (scikit-learn's: all 1,797 when trained elsewhere) and of the built-in test set."""
    from benchmarks.plain_loop import make_network, train
    from src.data.sources.builtin import synthetic

    cpu = torch.device("cpu")
    whole_sklearn = sklearn_digits()
    sets = real_sets(mnist_dir, seed, whole_sklearn)
    _, builtin = synthetic(None, 0)  # the default run's test set
    rows = []
    for name, (x, y, *_) in sets.items():
        net = make_network(torch.from_numpy(x), seed, cpu)
        train(net, torch.from_numpy(x), torch.from_numpy(y), epochs=5, seed=seed)
        net.eval()
        read = {}
        for other, (_, _, ux, uy) in sets.items():
            if other == "sklearn" and name != "sklearn":
                ux, uy = whole_sklearn
            read[other] = accuracy_table(uy, predict(net, ux))[0]
        read["built-in"] = accuracy_table(builtin.labels, predict(net, builtin.images))[0]
        rows.append((name, read))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "ckpt", type=Path, nargs="?", help="a checkpoint written by python -m src.train"
    )
    parser.add_argument(
        "--real-baseline",
        action="store_true",
        help="train on real digits instead and read the others",
    )
    parser.add_argument(
        "--mnist", type=Path, help="with --real-baseline: a folder of MNIST's IDX files"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="with --real-baseline: split and initial weights"
    )
    args = parser.parse_args(argv)
    if args.real_baseline == (args.ckpt is not None):
        parser.error("give a checkpoint, or --real-baseline (not both)")
    if args.mnist is not None and not args.real_baseline:
        parser.error("--mnist goes with --real-baseline")
    torch.set_num_threads(1)  # results must not depend on the machine's core count
    try:
        return report(args)
    except (CheckpointError, DataError) as err:  # a bad file or folder: one line, exit 2
        parser.exit(2, f"transfer.py: error: {one_line(err)}\n")


def report(args: argparse.Namespace) -> int:
    if args.real_baseline:
        rows = real_baseline(args.mnist, args.seed)
        columns = [name for name, _ in rows] + ["built-in"]
        print("trained on (the example's loop)  reads: " + "  ".join(f"{c:>8s}" for c in columns))
        for name, read in rows:
            print(f"{name:<33s}        " + "  ".join(f"{read[c]:8.4f}" for c in columns))
        return 0
    images, labels = sklearn_digits()
    network = load_network(args.ckpt)
    predicted = predict(network, images)
    overall, per_class = accuracy_table(labels, predicted)
    for how, hits in photo_accuracies(network).items():
        print(f"sklearn digits as {PHOTOS} photos, {how}: accuracy {hits:.4f}")
    print(f"sklearn digits: {len(labels)} images, accuracy {overall:.4f}")
    print("class    " + " ".join(f"{c:>5d}" for c in range(10)))
    print("accuracy " + " ".join(f"{a:5.3f}" for a in per_class))
    return 0


if __name__ == "__main__":
    sys.exit(main())
