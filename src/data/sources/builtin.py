"""data=synthetic: the built-in generator (src/data/synthetic.py), its draws cached."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from src.data.arrays import DigitArrays
from src.data.cache import cached
from src.data.sources.common import SPLITS

# The generator's looks (src/data/synthetic.py): typed here, so the config's check reads them from
# this signature without importing the generator (and matplotlib) before a run.
Style = Literal["mixed", "handwriting", "print"]


def synthetic(
    cache_dir: str | Path | None,
    seed: int = 0,
    num_train_per_class: int = 500,
    num_test_per_class: int = 500,
    style: Style = "mixed",
    *,
    splits: tuple[str, ...] = SPLITS,
) -> tuple[DigitArrays | None, DigitArrays]:
    """The built-in generator: independent train and test draws that depend only on `seed`
    (and `style`: handwriting, print or mixed)."""
    from src.data import synthetic as gen

    sets = {}
    for split, stream, n in (("train", 0, num_train_per_class), ("test", 1, num_test_per_class)):
        if split not in splits:
            continue
        key = {"split": split, "seed": seed, "num_per_class": n, **gen.generator_settings(style)}
        build = lambda n=n, stream=stream: gen.generate_digits(n, [seed, stream], style)  # noqa: E731
        data = cached(cache_dir, f"synthetic-{split}", key, build)
        sets[split] = data.check(f"synthetic {split}")
    return sets.get("train"), sets["test"]
