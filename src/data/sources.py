"""Where digit images come from: each source returns a (train, test) pair of DigitArrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.data.arrays import DataError, DigitArrays
from src.data.cache import cached


def synthetic(
    cache_dir: str | Path | None,
    seed: int = 0,
    num_train_per_class: int = 500,
    num_test_per_class: int = 500,
) -> tuple[DigitArrays, DigitArrays]:
    """The built-in generator: independent train and test draws that depend only on `seed`."""
    from src.data import synthetic as gen

    sets = []
    for split, stream, n in (("train", 0, num_train_per_class), ("test", 1, num_test_per_class)):
        key = {"split": split, "seed": seed, "num_per_class": n, **gen.generator_settings()}
        build = lambda n=n, stream=stream: gen.generate_digits(n, [seed, stream])  # noqa: E731
        sets.append(cached(cache_dir, f"synthetic-{split}", key, build).check(f"synthetic {split}"))
    return sets[0], sets[1]


SOURCES = {"synthetic": synthetic}


def load_source(
    name: str, cache_dir: str | Path | None, options: dict[str, Any]
) -> tuple[DigitArrays, DigitArrays]:
    """Load the named source with its options; DataError for an unknown name."""
    if name not in SOURCES:
        raise DataError(f"data.source={name!r} is not one of {sorted(SOURCES)}")
    return SOURCES[name](cache_dir, **options)
