"""What the project costs over a plain PyTorch loop: per iteration, per run, at start-up.

    python benchmarks/bench.py                    # CPU, the example's settings, 3 repetitions
    python benchmarks/bench.py --device cuda      # GPU (adds the CUDA-graph mode)
    python benchmarks/bench.py --host-overhead    # batch 2: each contender's own cost an iteration

Two measurements, each alternating the contenders so that a noisy machine hurts them alike:

1. The training loop, in this one process: the plain loop of `benchmarks/plain_loop.py` (data
   resident on the device, float32), the same loop as an expert writes it for this machine
   (autocast to bfloat16, channels_last, or both: all three are timed and the fastest is "the
   expert plain loop"), Lightning's floor (the same step in a bare LightningModule,
   `benchmarks/lightning_floor.py`) and the project's module and data module in a Lightning
   `Trainer` with the default callbacks and TensorBoard logger, built by `src.train.train` from
   the real config, by default and with `experiment=fast`. Each repetition times iterations
   2..N (the first one warms up), synchronising the device only at the two ends; the table gives
   the median time an iteration, images a second, the ratio to and difference from the plain
   loop, and the arithmetic rate against this machine's peak (`torch.mm`, measured here).
2. The whole run, as a user starts it: `python -m src.train` (default and `experiment=fast`)
   against `python benchmarks/plain_loop.py` (float32 and the expert's flags), wall time from
   start to exit (start-up, data, training, test, outputs), the fixed cost (wall time less the
   training loop) and peak memory (RSS); and, from the same processes, the start-up to the first
   iteration part by part (`benchmarks/startup.py`'s stamps).

Markdown tables are printed last, the four contenders summed up first; `--json FILE` also
writes the numbers. `--host-overhead` times the plain loop, the floor and the project only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning.pytorch.callbacks import Checkpoint  # noqa: E402

from benchmarks import plain_loop, startup  # noqa: E402

# Filled by IterationTimer during a project run: (seconds, iterations) after the first one.
_TIMINGS: list[tuple[float, int]] = []


def _timings() -> list[tuple[float, int]]:
    """The list Hydra's instance of IterationTimer fills: `benchmarks.bench`'s, which is not
    this module's when the file runs as a script."""
    import importlib

    return importlib.import_module("benchmarks.bench")._TIMINGS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class IterationTimer(Checkpoint):
    """Times a project run's iterations 2..N, synchronising the device only at the two ends.

    A `Checkpoint` subclass only so that Lightning calls it after the module's and the
    checkpoint callback's epoch-end hooks: the last epoch's end (block written out, checkpoint
    saved) is timed, as every other epoch's is, and the once-a-run work after training (figures,
    tables) is not: that is the whole run's fixed cost, measured separately."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._step0 = 0
        self._done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._t0 is None and trainer.global_step >= 1:
            _sync(pl_module.device)
            self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
            self._stop(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop(trainer, pl_module)  # stopped otherwise (max_steps)

    def _stop(self, trainer, pl_module) -> None:
        if self._t0 is not None and not self._done:
            _sync(pl_module.device)
            self._done = True
            _timings().append((time.perf_counter() - self._t0, trainer.global_step - self._step0))


def project_overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    return [
        f"trainer={accelerator}",
        f"trainer.max_epochs={args.epochs}",
        f"data.num_train_per_class={args.per_class[0]}",
        f"data.num_test_per_class={args.per_class[1]}",
        f"data.batch_size={args.batch_size}",
        *extra,
    ]


def project_config(args: argparse.Namespace, extra: list[str], out: Path) -> Any:
    """The project's config for a run with `extra` overrides, checked as the command line
    checks it; SystemExit with its one line (exit 2) for a bad one, before anything is timed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from src.cli import setup
    from src.config.rules import check_config
    from src.errors import ConfigError, exit_with, one_line
    from src.runtime.build import CONFIG_DIR

    setup()  # as the command line does first
    overrides = project_overrides(args, extra) + [
        "test=false",
        "+callbacks.iteration_timer._target_=benchmarks.bench.IterationTimer",
    ]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.paths.cache_dir = str(args.cache_dir)
            cfg.hydra.runtime.output_dir = str(out)
        HydraConfig.instance().set_config(cfg)
        check_config(cfg)
    except (ConfigError, HydraException) as err:
        exit_with(f"error: {one_line(err)}", 2)
    return cfg


def project_loop(args: argparse.Namespace, extra: list[str], out: Path) -> float:
    """Seconds an iteration of the project's training loop (one run, in this process)."""
    from src.train import train

    cfg = project_config(args, extra, out)
    _timings().clear()
    train(cfg)
    seconds, iterations = _timings()[-1]
    return seconds / iterations


def floor_iteration(args: argparse.Namespace, data: tuple[torch.Tensor, ...]) -> float:
    """Seconds an iteration of the bare LightningModule (Lightning's floor), iterations 2..N."""
    from benchmarks.lightning_floor import fit

    device = torch.device(args.device)
    images, labels = data[0], data[1]
    net = plain_loop.make_network(images, 0, device)
    _timings().clear()
    fit(net, images, labels, args.epochs, args.batch_size, [IterationTimer()])
    seconds, iterations = _timings()[-1]
    return seconds / iterations


def plain_iteration(
    args: argparse.Namespace, data: tuple[torch.Tensor, ...], bf16: bool = False,
    channels_last: bool = False,
) -> float:  # fmt: skip
    """Seconds an iteration of the plain loop (iterations 2..N of one run); `bf16` and
    `channels_last`: as an expert writes it (`plain_loop.py --bf16 --channels-last`)."""
    device = torch.device(args.device)
    images, labels = data[0], data[1]
    net = plain_loop.make_network(images, 0, device, channels_last)
    seconds, iterations = plain_loop.train(
        net, images, labels, args.epochs, args.batch_size, time_after_first=True, bf16=bf16,
        channels_last=channels_last,
    )  # fmt: skip
    return seconds / iterations


# The expert's variants of the plain loop: (name, plain_loop.py flags).
EXPERT_VARIANTS = (
    ("bf16", ["--bf16"]),
    ("channels_last", ["--channels-last"]),
    ("bf16 + channels_last", ["--bf16", "--channels-last"]),
)
EXPERT = "expert plain, "  # the loop table's names of the variants: EXPERT + name
FAST = "project, experiment=fast"


def expert_choice(loop: dict[str, dict[str, float]]) -> tuple[str, list[str]]:
    """The expert's variant: the fastest measured one; without a loop measurement, bfloat16
    where it is native (what experiment=fast would pick) and channels_last elsewhere."""
    measured = [(loop[EXPERT + n]["ms_per_iter"], n, f) for n, f in EXPERT_VARIANTS
                if EXPERT + n in loop]  # fmt: skip
    if measured:
        _, name, flags = min(measured)
        return name, flags
    from src.model.precision import fast_precision

    native = fast_precision("gpu" if torch.cuda.is_available() else "cpu") == "bf16-mixed"
    name, flags = EXPERT_VARIANTS[0] if native else EXPERT_VARIANTS[1]
    return name, flags


def flops_per_iteration(batch_size: int) -> float:
    """Floating-point operations of one training iteration of the network (forward and
    backward; a multiply-add is 2): the convolutions and the fully connected layer, whose
    backward is twice their forward (the gradients of the input and of the weights), except the
    first layer's (no input gradient). Batch norm, ReLU and the optimizer are left out (under
    1 %)."""
    from torch import nn

    from src.model.network import DigitsNet

    net, layers = DigitsNet(), []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        per_output = module.weight[0].numel()  # in_channels x kh x kw, or in_features
        layers.append(2.0 * output.numel() * per_output)

    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(count)
    with torch.no_grad():
        net(torch.zeros(batch_size, *net.input.mean.shape))
    return 3 * sum(layers) - layers[0]


def mm_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """This machine's arithmetic rate in FLOP/s: the best of square `torch.mm` products in
    `dtype` repeated for about `seconds` (2 n^3 operations each)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: libraries loaded, kernels chosen
    best, spent = float("inf"), 0.0
    while spent < seconds:
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
    return 2.0 * n**3 / best


def machine_peak(args: argparse.Namespace) -> dict[str, float]:
    """FLOPs an iteration and the measured float32 and bfloat16 peaks (GFLOP/s)."""
    device = torch.device(args.device)
    return {
        "gflop_per_iter": flops_per_iteration(args.batch_size) / 1e9,
        "float32_gflops": mm_peak(device, torch.float32) / 1e9,
        "bf16_gflops": mm_peak(device, torch.bfloat16) / 1e9,
    }


# Runs the command and reports its peak RSS. A child forked from this (large) process would
# report this process's peak instead: Linux keeps the high-water mark across exec.
_PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('PEAK_RSS_KB=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(r.returncode)"
)


def run_process(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, standard output) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK, *cmd], cwd=ROOT, capture_output=True,
                          text=True, env=startup.environment())  # fmt: skip
    wall = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    peak_kb = int(proc.stdout.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return wall, peak_kb / 1024, proc.stdout


# The whole runs: the plain script (float32, and with the expert's flags) and the project
# (default, experiment=fast). Each runs its real entry point under benchmarks/startup.py, which
# stamps its start-up on the way (`python -m src.train ARGS` is `startup.py --child project --
# ARGS`, the same `src.train.cli()`).
WHOLE = ("plain", "expert", "project", "fast")


def whole_runs(args: argparse.Namespace, tmp: Path, expert: list[str]) -> dict[str, Any]:
    """Wall time, fixed cost and peak memory of `python -m src.train` (default and
    experiment=fast) and the plain script (float32 and `expert`'s flags); the start-up part by
    part of the plain script and the default project."""
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in WHOLE}
    stamps: dict[str, list[dict[str, float]]] = {"plain": [], "project": []}
    for rep in range(args.reps):
        for name in WHOLE if rep % 2 == 0 else WHOLE[::-1]:
            out = tmp / f"whole_{name}_{rep}"
            kind = "plain" if name in ("plain", "expert") else "project"
            extra = {"expert": expert, "fast": ["experiment=fast"]}.get(name, [])
            wall, rss, stdout = run_process(startup.command(kind, args, out, False, extra))
            metrics = json.loads((out / "metrics.json").read_text())
            loop = metrics["loop_s"] if kind == "plain" else metrics["train/elapsed_s"]
            results[name].append((wall, wall - loop, rss))
            if name in stamps:
                stamps[name].append(startup.stamps_of(stdout))
    summary: dict[str, Any] = {}
    for name, rows in results.items():
        summary[name] = {
            "wall_s": statistics.median(r[0] for r in rows),
            "fixed_s": statistics.median(r[1] for r in rows),
            "loop_s": statistics.median(r[0] - r[1] for r in rows),
            "peak_rss_mib": max(r[2] for r in rows),
            # each repetition's wall time against the plain script's beside it
            "ratio": statistics.median(r[0] / p[0] for r, p in zip(rows, results["plain"])),
        }
    summary["expert"]["flags"] = " ".join(expert)
    summary["startup"] = startup.breakdown(stamps)
    return summary


def loop_comparison(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    """Median seconds an iteration of each contender, alternating them every repetition."""
    device = torch.device(args.device)
    xtr, ytr, _, _ = plain_loop.load_digits(args.cache_dir, tuple(args.per_class))
    data = (xtr.to(device), ytr.to(device))
    contenders: dict[str, Any] = {"plain loop": lambda rep: plain_iteration(args, data)}
    if not args.host_overhead:  # the arithmetic levers: nothing to pull at batch 2
        for name, flags in EXPERT_VARIANTS:
            contenders[EXPERT + name] = lambda rep, f=flags: plain_iteration(
                args, data, "--bf16" in f, "--channels-last" in f
            )
    contenders["Lightning's floor (bare module)"] = lambda rep: floor_iteration(args, data)
    contenders["project (default)"] = lambda rep: project_loop(args, [], tmp / f"loop_{rep}")
    if not args.host_overhead:
        contenders[FAST] = lambda rep: project_loop(args, ["experiment=fast"], tmp / f"fast_{rep}")
    if device.type == "cuda":
        contenders["project, model.cuda_graph=true"] = lambda rep: project_loop(
            args, ["model.cuda_graph=true"], tmp / f"graph_{rep}"
        )
    for i, variant in enumerate(args.variant):  # "NAME=override override ..."
        name, _, overrides = variant.partition("=")
        words = overrides.split()
        contenders[f"project, {name}"] = lambda rep, i=i, o=words: project_loop(
            args, o, tmp / f"variant{i}_{rep}"
        )
    times: dict[str, list[float]] = {name: [] for name in contenders}
    peaks: dict[str, int] = {}
    names = list(contenders)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[name].append(contenders[name](rep))
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))
    base = times["plain loop"]
    summary = {}
    for name, values in times.items():
        median = statistics.median(values)
        summary[name] = {
            "ms_per_iter": median * 1e3,
            "images_per_s": args.batch_size / median,
            # each repetition's ratio to the plain loop's run beside it: drifts cancel
            "ratio": statistics.median(v / b for v, b in zip(values, base)),
            # ... and its difference, the host cost a GPU user pays at every iteration
            "over_plain_ms": statistics.median((v - b) * 1e3 for v, b in zip(values, base)),
            "all_ms": [v * 1e3 for v in values],
        }
        if name in peaks:
            summary[name]["peak_gpu_mib"] = peaks[name] / 2**20
    return summary


def machine() -> str:
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}")  # fmt: skip


def _rate(images_per_s: float, peak: dict[str, float], batch_size: int) -> str:
    """GFLOP/s of the network's arithmetic at this many images a second, and its share of the
    float32 and bfloat16 peaks."""
    gflops = images_per_s / batch_size * peak["gflop_per_iter"]
    return (f"{gflops:.0f} | {100 * gflops / peak['float32_gflops']:.0f} % / "
            f"{100 * gflops / peak['bf16_gflops']:.0f} %")  # fmt: skip


def summary_rows(expert: str) -> list[tuple[str, str, str]]:
    """The four contenders: (name, its loop table row, its whole-run key)."""
    return [
        ("plain float32 loop", "plain loop", "plain"),
        (f"expert plain loop ({expert})", EXPERT + expert, "expert"),
        ("project (default)", "project (default)", "project"),
        ("project, experiment=fast", FAST, "fast"),
    ]


def table(loop: dict, whole: dict, args: argparse.Namespace, peak: dict, expert: str) -> str:
    lines = [
        f"Benchmark {time.strftime('%Y-%m-%d')} on {machine()}; device {args.device}, "
        f"{args.epochs} epochs, batch {args.batch_size}, {sum(args.per_class) * 10} images, "
        f"{args.reps} repetitions (medians)",
        "",
        f"This machine's peak (torch.mm, measured now): {peak['float32_gflops']:.0f} GFLOP/s "
        f"in float32, {peak['bf16_gflops']:.0f} GFLOP/s in bfloat16; an iteration is "
        f"{peak['gflop_per_iter']:.2f} GFLOP (forward and backward, batch {args.batch_size}).",
    ]
    if (loop or whole) and not args.host_overhead:
        expert_ms = loop[EXPERT + expert]["ms_per_iter"] if loop else None
        lines += [
            "",
            "| contender | loop ms / iteration | images / s | loop vs plain | loop vs expert "
            "| whole process s | whole vs plain | GFLOP/s | % of peak (fp32 / bf16) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, row, key in summary_rows(expert):
            cells, wall, rate = ["-"] * 4, ["-"] * 2, "- | -"
            if loop:  # vs plain: the median of paired ratios; vs expert: of the medians
                r = loop[row]
                cells = [f"{r['ms_per_iter']:.1f}", f"{r['images_per_s']:.0f}",
                         f"{r['ratio']:.2f}", f"{r['ms_per_iter'] / expert_ms:.2f}"]  # fmt: skip
                rate = _rate(r["images_per_s"], peak, args.batch_size)
            if whole:
                wall = [f"{whole[key]['wall_s']:.1f}", f"{whole[key]['ratio']:.2f}"]
            lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(wall)} | {rate} |")
    if loop:
        lines += [
            "",
            "| training loop | ms / iteration | images / s | ratio to plain | ms over plain "
            "| GFLOP/s | % of peak (fp32 / bf16) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    for name, r in loop.items():
        peak_gpu = f" (peak GPU {r['peak_gpu_mib']:.0f} MiB)" if "peak_gpu_mib" in r else ""
        lines.append(f"| {name}{peak_gpu} | {r['ms_per_iter']:.2f} | {r['images_per_s']:.0f} | "
                     f"{r['ratio']:.3f} | {r['over_plain_ms']:+.2f} | "
                     f"{_rate(r['images_per_s'], peak, args.batch_size)} |")  # fmt: skip
    if whole:
        p, q = whole["plain"], whole["project"]
        lines += [
            "",
            "| whole run | wall s | fixed cost s (wall less loop) | peak RSS MiB |",
            "| --- | --- | --- | --- |",
            f"| plain script | {p['wall_s']:.2f} | {p['fixed_s']:.2f} | {p['peak_rss_mib']:.0f} |",
            f"| plain script {whole['expert']['flags']} | {whole['expert']['wall_s']:.2f} | "
            f"{whole['expert']['fixed_s']:.2f} | {whole['expert']['peak_rss_mib']:.0f} |",
            f"| python -m src.train | {q['wall_s']:.2f} | {q['fixed_s']:.2f} | "
            f"{q['peak_rss_mib']:.0f} |",
            f"| python -m src.train experiment=fast | {whole['fast']['wall_s']:.2f} | "
            f"{whole['fast']['fixed_s']:.2f} | {whole['fast']['peak_rss_mib']:.0f} |",
            f"| ratio / difference (default project to plain) | {q['wall_s'] / p['wall_s']:.3f} | "
            f"+{q['fixed_s'] - p['fixed_s']:.2f} s | "
            f"x{q['peak_rss_mib'] / p['peak_rss_mib']:.2f} |",
            "",
            startup.table(whole["startup"], "start-up (the whole runs above)"),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--epochs", type=startup.positive, help="default 5 (--host-overhead: 2)")
    p.add_argument("--batch-size", type=startup.positive, default=128)
    p.add_argument("--per-class", type=startup.positive, nargs=2, metavar=("TRAIN", "TEST"),
                   help="images a class; default 500 500 (--host-overhead: 50 50)")  # fmt: skip
    p.add_argument("--reps", type=startup.positive, default=5)
    p.add_argument(
        "--host-overhead",
        action="store_true",
        help="the host-overhead setting: batch 2, 50+50 images a class, 2 epochs (unless given), "
        "loop only; the "
        "arithmetic shrinks to nothing, so what is left is each contender's own cost an "
        "iteration (on a GPU, an iteration is mostly this)",
    )
    p.add_argument("--skip-whole", action="store_true", help="only the in-process loop timing")
    p.add_argument("--skip-loop", action="store_true", help="only the whole-run comparison")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="also time the project with these Hydra overrides (space-separated), e.g. "
        "'no monitor=~callbacks.bn_state_monitor'",
    )
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.skip_whole and args.skip_loop:
        p.error("--skip-whole with --skip-loop leaves nothing to time")
    if bad := [v for v in args.variant if "=" not in v]:
        p.error(f"--variant {bad[0]!r}: write NAME=OVERRIDES")
    startup.check_json(p, args.json)
    if args.host_overhead:
        args.batch_size, args.skip_whole = 2, True
    small = args.host_overhead
    args.epochs = args.epochs or (2 if small else 5)
    args.per_class = tuple(args.per_class or ((50, 50) if small else (500, 500)))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench: --device cuda, but torch sees no CUDA GPU on this machine")
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        for variant in ["=", *args.variant]:  # each checked before anything is timed
            project_config(args, variant.partition("=")[2].split(), tmp / "check")
        loop = {} if args.skip_loop else loop_comparison(args, tmp)
        expert, flags = expert_choice(loop)  # the fastest variant measured
        whole = {} if args.skip_whole else whole_runs(args, tmp, flags)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak = machine_peak(args)
    print(table(loop, whole, args, peak, expert))
    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
              "peak": peak, "expert": expert, "loop": loop, "whole": whole}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
