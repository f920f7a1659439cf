"""Start-up, part by part: from the command's start to its first training iteration, the project
(`python -m src.train`) against the plain script (`benchmarks/plain_loop.py`).

    python benchmarks/startup.py                 # the example's size, 5 runs each (medians)
    python benchmarks/startup.py --reps 3 --per-class 20 10    # a quick look

Each run is a fresh process that stops at its first iteration. It runs the real entry point
(`src.train.cli` with the command line's overrides, `plain_loop.main`) with time stamps taken as
it goes: after `import torch`, `import lightning` and the project's modules; when the
config has been composed and checked (the training job starts); around the data (the data module's
`setup`, `load_digits`), after the model is built and after Lightning's `Trainer`; and at the
first training step. A part is the time between two stamps, measured from the moment the parent
started the process (the interpreter's own start is in the first part). `benchmarks/bench.py`
uses the same stamps in its whole runs, which go on to the end.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
T0_ENV = "STARTUP_T0"  # the parent's time.time() just before it started the process
MARK = "STARTUP_STAMPS="


def positive(text: str) -> int:
    """An argument that counts something: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def check_json(parser: argparse.ArgumentParser, path: Path | None) -> None:
    """--json's folder must exist before minutes of timing, not after them."""
    if path is not None and not path.parent.is_dir():
        parser.error(f"--json {path}: no folder {path.parent}")


# (stamp, the part that ends there) in order; a contender lacks the stamps it has no part for.
PARTS = (
    ("torch", "python start, import torch"),
    ("lightning", "import lightning"),
    ("project", "import the project (Hydra, OmegaConf, src)"),
    ("checked", "command line: config composed and checked"),
    ("data_start", "run folder, config.yaml, config tree"),
    ("data", "data (generated or read from the cache)"),
    ("model", "model built"),
    ("trainer", "callbacks, loggers, Trainer set-up"),
    ("first_iteration", "fit set-up until the first iteration"),
)

_stamps: dict[str, float] = {}


def _stamp(name: str) -> None:
    _stamps.setdefault(name, time.time())  # the first time only


def _after(
    name: str, fn: Callable[..., Any], before: str | None = None, once: str | None = None
) -> Callable[..., Any]:
    """`fn`, stamping `before` as it starts and `name` as it returns (the first call; with
    `once`, the first call after that stamp: the config check builds a network too)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            _stamp(before)
        out = fn(*args, **kwargs)
        if once is None or once in _stamps:
            _stamp(name)
        return out

    return wrapped


def _report(stop: bool) -> None:
    t0 = float(os.environ.get(T0_ENV, _stamps.get("torch", time.time())))
    print(MARK + json.dumps({k: v - t0 for k, v in _stamps.items()}), flush=True)
    if stop:
        os._exit(0)  # no test, no outputs: only the start-up was asked for


def _first_step(fn: Callable[..., Any], stop: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if "first_iteration" not in _stamps:
            _stamp("first_iteration")
            if stop:
                _report(stop)
        return fn(*args, **kwargs)

    return wrapped


def child(kind: str, argv: list[str], stop: bool) -> None:
    """Run the project's command line or the plain script in this process, stamping each part."""
    import atexit
    import gc

    import torch  # noqa: F401

    _stamp("torch")
    if not stop:
        atexit.register(_report, False)
    sys.path.insert(0, str(ROOT))
    if kind == "plain":
        from benchmarks import plain_loop

        _stamp("project")
        plain_loop.load_digits = _after("data", plain_loop.load_digits, before="data_start")
        plain_loop.make_network = _after("model", plain_loop.make_network)
        plain_loop.train = _first_step(plain_loop.train, stop)
        sys.argv = ["plain_loop.py", *argv]
        plain_loop.main()
        return
    import lightning

    _stamp("lightning")
    import src.train
    from src.data.datamodule import DigitsDataModule
    from src.model.module import BNStateModule

    _stamp("project")
    src.train.train = _after("done", src.train.train, before="checked")
    DigitsDataModule.setup = _after("data", DigitsDataModule.setup, before="data_start")
    BNStateModule.__init__ = _after("model", BNStateModule.__init__, once="data")
    lightning.Trainer.__init__ = _after("trainer", lightning.Trainer.__init__)
    BNStateModule.training_step = _first_step(BNStateModule.training_step, stop)
    sys.argv = ["src.train", *argv]
    gc.freeze()  # as `python -m src.train` does before its command line (its `__main__` block)
    src.train.cli()


def command(kind: str, args: argparse.Namespace, out: Path, stop: bool,
            extra: list[str] = ()) -> list[str]:  # fmt: skip
    """The child's command line: the project with the example's overrides, or the plain script."""
    head = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
    if stop:
        head.append("--stop")
    if kind == "plain":
        rest = ["--device", getattr(args, "device", "cpu"), "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), "--per-class", *map(str, args.per_class),
                "--cache-dir", str(args.cache_dir), "--out", str(out), *extra]  # fmt: skip
    else:
        device = "gpu" if getattr(args, "device", "cpu") == "cuda" else "cpu"
        rest = [f"trainer={device}", f"trainer.max_epochs={args.epochs}",
                f"data.num_train_per_class={args.per_class[0]}",
                f"data.num_test_per_class={args.per_class[1]}",
                f"data.batch_size={args.batch_size}", f"paths.cache_dir={args.cache_dir}",
                f"hydra.run.dir={out}", *extra]  # fmt: skip
    return [*head, "--", *rest]


def stamps_of(output: str) -> dict[str, float]:
    """The stamps a child printed (seconds from its start)."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise ValueError("the process printed no start-up stamps")


def environment() -> dict[str, str]:
    return {**os.environ, T0_ENV: repr(time.time())}


def parts(stamps: dict[str, float]) -> dict[str, float]:
    """Seconds of each part a contender has (between its stamp and the one before)."""
    out, last = {}, 0.0
    for name, _ in PARTS:
        if name in stamps:
            out[name] = stamps[name] - last
            last = stamps[name]
    return out


def breakdown(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median seconds of each part over the runs, per contender."""
    result = {}
    for name, stamps in runs.items():
        each = [parts(s) for s in stamps]
        keys = [k for k, _ in PARTS if any(k in p for p in each)]
        result[name] = {k: statistics.median(p.get(k, 0.0) for p in each) for k in keys}
        result[name]["total"] = statistics.median(s["first_iteration"] for s in stamps)
    return result


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """`args.reps` start-ups of each contender, alternating, stopped at the first iteration."""
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "project": []}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for rep in range(args.reps + 1):  # the first pair fills the data cache: not counted
            for kind in ("plain", "project") if rep % 2 else ("project", "plain"):
                cmd = command(kind, args, Path(tmp) / f"{kind}_{rep}", stop=True)
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                      env=environment())  # fmt: skip
                if proc.returncode != 0:
                    raise SystemExit(f"startup: {kind} failed ({proc.returncode}):\n"
                                     f"{(proc.stdout + proc.stderr)[-3000:]}")  # fmt: skip
                if rep:
                    runs[kind].append(stamps_of(proc.stdout))
    return breakdown(runs)


def table(result: dict[str, dict[str, float]], title: str = "start-up") -> str:
    """Markdown: each part's median seconds, the project's and the plain script's."""
    p, q = result["plain"], result["project"]
    lines = [f"| {title}: from the command's start | plain script s | python -m src.train s | "
             "difference s |", "| --- | --- | --- | --- |"]  # fmt: skip
    for key, label in PARTS:
        a, b = p.get(key), q.get(key)
        if a is None and b is None:
            continue
        shown = [f"{v:.2f}" if v is not None else "-" for v in (a, b)]
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {(b or 0) - (a or 0):+.2f} |")
    lines.append(f"| **to the first iteration** | {p['total']:.2f} | {q['total']:.2f} | "
                 f"{q['total'] - p['total']:+.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # python startup.py --child KIND [--stop] -- ARGS
        kind, stop = argv[1], "--stop" in argv[2:3]
        child(kind, argv[argv.index("--") + 1 :], stop)
        return {}
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--reps", type=positive, default=5)
    p.add_argument("--epochs", type=positive, default=5)
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument(
        "--per-class", type=positive, nargs=2, default=(500, 500), metavar=("TRAIN", "TEST")
    )
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    p.add_argument("--json", type=Path, help="also write the medians here")
    args = p.parse_args(argv)
    check_json(p, args.json)
    result = measure(args)
    print(f"Start-up to the first iteration, {time.strftime('%Y-%m-%d')}, medians of "
          f"{args.reps} runs each ({sum(args.per_class) * 10} images)\n")  # fmt: skip
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
