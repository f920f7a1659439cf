"""A cProfile of the project's training loop at the host-overhead setting, function by function.

    python benchmarks/profile_loop.py [OVERRIDES...]      # e.g. callbacks=none logger=none

One warm-up run, then one profiled run (batch 2, 1,000 images, 2 epochs: 500 iterations), both
built by `src.train.train` from the real config as `benchmarks/bench.py` builds them. Prints the
functions of the project, Lightning's loop and hooks and TensorBoard's writer by cumulative time;
divide by 500 for a figure an iteration. cProfile's own overhead inflates every Python call:
read the columns as shares, and time with `bench.py --host-overhead`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench  # noqa: E402

SHOWN = (
    r"src/|call\.py|training_epoch_loop|optimization/manual|core/optimizer\.py"
    r"|tensorboard/writer\.py:\d+\(add_summary\)"
)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the project's run")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    p.add_argument("--lines", type=int, default=40)
    args = p.parse_args(argv)
    setting = argparse.Namespace(device="cpu", epochs=2, batch_size=2, per_class=(50, 50),
                                 cache_dir=args.cache_dir)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        bench.project_config(setting, args.overrides, Path(tmp) / "check")  # one line, at once
        bench.project_loop(setting, args.overrides, Path(tmp) / "warm")
        profile = cProfile.Profile()
        profile.enable()
        bench.project_loop(setting, args.overrides, Path(tmp) / "profiled")
        profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(SHOWN, args.lines)
    print(out.getvalue())
    return out.getvalue()


if __name__ == "__main__":
    main()
