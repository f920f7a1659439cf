"""A disk cache for decoded or generated digit arrays that is checked, never trusted."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from src.data.arrays import DigitArrays
from src.io import output_file

log = logging.getLogger(__name__)


def cache_path(cache_dir: Path, name: str, key: dict) -> Path:
    """Where arrays built from `key` (any JSON-serialisable settings) are cached."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return Path(cache_dir) / f"{name}-{digest[:20]}.npz"


def _content_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_cached(path: Path) -> DigitArrays | None:
    """The arrays stored at `path`, or None when missing or damaged in any way."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "digest"}
            digest = str(f["digest"])
        if digest != _content_digest(arrays):
            raise ValueError("content digest mismatch")
        return DigitArrays(**arrays)
    except Exception as err:  # any failure to read means: rebuild
        log.warning("Data cache %s is damaged (%s); rebuilding it.", path, err)
        return None


def save_cached(path: Path, data: DigitArrays) -> None:
    """Write atomically (`src.io.output_file`): a crash or a parallel run never leaves a
    half-written cache file. A read-only or full disk costs time, not the run: a warning."""
    arrays = {name: a for name, a in vars(data).items() if a is not None}
    try:
        with output_file(path, "data cache") as tmp:
            np.savez(tmp, digest=np.array(_content_digest(arrays)), **arrays)
    except OSError as err:
        log.warning("%s; continuing without it.", err)


def cached_sets(
    cache_dir: str | Path | None, sets: dict[str, tuple[dict, Callable[[], DigitArrays]]]
) -> dict[str, DigitArrays]:
    """Each `name: (key, build)`'s arrays, from the cache where a sound copy for its key exists
    there; built ones are written only once every set has built cleanly."""
    if cache_dir is None:
        return {name: build() for name, (_, build) in sets.items()}
    paths = {name: cache_path(Path(cache_dir), name, key) for name, (key, _) in sets.items()}
    found = {name: load_cached(path) for name, path in paths.items()}
    out = {name: data if data is not None else sets[name][1]() for name, data in found.items()}
    for name, data in found.items():
        if data is None:
            save_cached(paths[name], out[name])
    return out


def cached(
    cache_dir: str | Path | None, name: str, key: dict, build: Callable[[], DigitArrays]
) -> DigitArrays:
    """`build()`'s result, from the cache when a sound copy for `key` exists there."""
    return cached_sets(cache_dir, {name: (key, build)})[name]
