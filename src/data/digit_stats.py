"""The statistics that compare a digit set's look with MATLAB's digit images, and image grids.

    python -m src.data.digit_stats                 # the built-in generator, 5,000 images
    python -m src.data.digit_stats --style print   # its print-font digits only
    python -m src.data.digit_stats --grid docs/images/generated-digits.png   # 10 of each class

Ink is every pixel above 0.1. MATLAB's values (measured on `digitTrain4DArrayData`) are printed
beside the measured ones; docs/data.md quotes both.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

# MATLAB's digitTrain4DArrayData, for the table this module prints.
MATLAB = {
    "mean_pixel": 0.088,
    "ink_share": 0.15,
    "ink_mean": 0.57,
    "ink_bins": (0.23, 0.17, 0.16, 0.16, 0.28),
    "core_share": 0.012,
    "stroke_width": 2.3,
    "height_median": 19.0,
    "height_p5_p95": (12.0, 24.0),
    "width_median": 15.0,
    "width_p5_p95": (10.0, 22.0),
}


def _extent(any_ink: np.ndarray) -> np.ndarray:
    """Per image, rows from the first to the last holding any ink (0 for a blank image)."""
    first = any_ink.argmax(axis=1)
    last = any_ink.shape[1] - 1 - any_ink[:, ::-1].argmax(axis=1)
    return np.where(any_ink.any(axis=1), last - first + 1, 0)


def stroke_widths(images: np.ndarray) -> np.ndarray:
    """Per image, 2 x area / perimeter of the pixels above 0.5: exact for a long straight stroke."""
    ink = np.pad(images > 0.5, ((0, 0), (1, 1), (1, 1)))
    edges = (ink[:, 1:] != ink[:, :-1]).sum(axis=(1, 2)) + (ink[:, :, 1:] != ink[:, :, :-1]).sum(
        axis=(1, 2)
    )
    return 2.0 * ink.sum(axis=(1, 2)) / np.maximum(edges, 1)


def digit_statistics(images: np.ndarray) -> dict:
    """The statistics of MATLAB above for images (N, 28, 28) or (N, 1, 28, 28) in [0, 1]."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), *images.shape[-2:])
    ink = x > 0.1
    values = x[ink]
    bins = np.histogram(values, bins=5, range=(0.1, 1.0))[0] / max(values.size, 1)
    heights, widths = _extent(ink.any(axis=2)), _extent(ink.any(axis=1))
    return {
        "mean_pixel": float(x.mean()),
        "ink_share": float(ink.mean()),
        "ink_mean": float(values.mean()),
        "ink_bins": tuple(float(b) for b in bins),
        "core_share": float((x >= 0.99).mean()),
        "stroke_width": float(np.median(stroke_widths(x))),
        "height_median": float(np.median(heights)),
        "height_p5_p95": (float(np.percentile(heights, 5)), float(np.percentile(heights, 95))),
        "width_median": float(np.median(widths)),
        "width_p5_p95": (float(np.percentile(widths, 5)), float(np.percentile(widths, 95))),
    }


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    return f"{value:.3f}".rstrip("0").rstrip(".") if value < 1 else f"{value:.1f}"


def table(stats: dict) -> str:
    """A markdown table of `stats` beside MATLAB's."""
    rows = ["| statistic | generated | MATLAB |", "| --- | --- | --- |"]
    rows += [f"| {k} | {_show(v)} | {_show(MATLAB[k])} |" for k, v in stats.items()]
    return "\n".join(rows)


def image_grid(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Images (N, [1,] H, W) in [0, 1] as one uint8 picture, `columns` a row, `pad` px between;
    gaps are mid-grey so that black backgrounds stay apart."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), *images.shape[-2:])
    rows = -(-len(x) // columns)
    h, w = x.shape[1:]
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 0.5)
    for i, im in enumerate(x):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = im
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def class_grid(images: np.ndarray, labels: np.ndarray, per_class: int = 10) -> np.ndarray:
    """The first `per_class` images of each class 0-9, a row each, as image_grid draws them."""
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    return image_grid(np.concatenate([images[p] for p in picks]), per_class)


def _whole(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < least:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {least} or more")
        return int(text)

    return parse


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    from src.data.synthetic import STYLES, generate_digits
    from src.errors import OutputWriteError
    from src.io import output_file

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--style", choices=STYLES, default="mixed")
    parser.add_argument("--per-class", type=_whole(1), default=500)
    parser.add_argument("--seed", type=_whole(0), default=0)
    parser.add_argument("--grid", metavar="PNG", help="also write 10 digits of each class here")
    args = parser.parse_args(argv)
    data = generate_digits(args.per_class, [args.seed, 0], style=args.style)
    print(table(digit_statistics(data.images)))
    if args.grid:
        from PIL import Image

        # Twice the size, nearest neighbour: pixels stay visible and the PNG stays small.
        grid = class_grid(data.images, data.labels, min(args.per_class, 10))
        try:
            with output_file(Path(args.grid), "grid") as tmp:
                Image.fromarray(grid.repeat(2, axis=0).repeat(2, axis=1)).save(
                    tmp, format="PNG", optimize=True
                )
        except OutputWriteError as err:
            parser.exit(4, f"error: {err}\n")
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
