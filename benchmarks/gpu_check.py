"""Every GPU figure in one command, for whoever has a GPU for a few minutes.

    python benchmarks/gpu_check.py                # on a machine with a CUDA GPU: about 4 minutes
    python benchmarks/gpu_check.py --dry-run      # the same steps on the CPU, tiny (the suite)

In order, each step a separate process with a time limit, so one failure costs only its step:

1. the test suite's GPU tests (`pytest -m gpu`);
2. `python -m src.train trainer=gpu`, the example's experiment end to end: test accuracy, wall
   time;
3. `benchmarks/bench.py --device cuda` at the example's size and at the host-overhead setting:
   plain loop, Lightning's floor, the project, and `model.cuda_graph=true`, ms an iteration;
4. `model.cuda_graph=true` against the eager loop over 3 seeds: test accuracy of each;
5. the speed settings on the GPU, seed 0: `trainer.precision=bf16-mixed`,
   `model.channels_last=true`, and both with `model.cuda_graph=true`: test accuracy, wall time.

A summary table is printed last (and `--out DIR` keeps each step's log and `gpu_check.json`).
`--dry-run` runs the same sequence on the CPU with a tiny data set and one epoch, without the
CUDA-graph runs, which need a GPU, without step 4 (its eager seed 0 would repeat step 2), and
with step 5's two settings in one run: it checks that the commands and their parsing still work.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    command: list[str]
    timeout: int
    figures: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0


def _train(out: Path, name: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "src.train", *overrides, f"hydra.run.dir={out / name}"]


def plan(out: Path, dry: bool) -> list[Step]:
    """The steps, on the GPU or (`dry`) on the CPU with tiny settings."""
    py = sys.executable
    if dry:
        device, tiny = "cpu", ["data.num_train_per_class=20", "data.num_test_per_class=10",
                               "trainer.max_epochs=1", "data.batch_size=32"]  # fmt: skip
        bench = ["--device", "cpu", "--reps", "1", "--epochs", "1", "--per-class", "20", "10",
                 "--batch-size", "32", "--skip-whole"]  # fmt: skip
        pytest = [py, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-n", "0"]
        seeds, graph = [], []  # seed 0 eager on the CPU is the end-to-end step already
    else:
        device, tiny = "gpu", []
        bench = ["--device", "cuda", "--reps", "3", "--epochs", "2", "--skip-whole"]
        pytest = [py, "-m", "pytest", "-m", "gpu", "-q", "-n", "0"]
        seeds, graph = [0, 1, 2], ["model.cuda_graph=true"]
    steps = [
        Step("GPU tests", pytest, 300),
        Step("trainer=gpu, end to end", _train(out, "end_to_end", [f"trainer={device}", *tiny]),
             300),  # fmt: skip
        Step("benchmark, example's size", [py, "benchmarks/bench.py", *bench], 600),
        # The dry run keeps the host-overhead step tiny too (its own preset is 1,000 iterations).
        Step("benchmark, host overhead",
             [py, "benchmarks/bench.py", "--host-overhead", *bench[:2], "--reps", bench[3],
              *(["--epochs", "1", "--per-class", "5", "5"] if dry else [])], 600),
    ]  # fmt: skip
    for seed in seeds:
        for mode, extra in (("eager", []), ("cuda_graph", graph)):
            if mode == "cuda_graph" and not graph:
                continue
            overrides = [f"trainer={device}", f"seed={seed}", *extra, *tiny]
            steps.append(Step(f"seed {seed}, {mode}", _train(out, f"{mode}_{seed}", overrides),
                              300))  # fmt: skip
    settings = {
        "bf16-mixed": ["trainer.precision=bf16-mixed"],
        "channels_last": ["model.channels_last=true"],
        "bf16-mixed, channels_last, cuda_graph": ["trainer.precision=bf16-mixed",
                                                  "model.channels_last=true", *graph],
    }  # fmt: skip
    if dry:  # on the CPU, the two settings in one run: what is checked is that they run
        settings = {
            "bf16-mixed, channels_last": [*settings["bf16-mixed"], *settings["channels_last"]]
        }
    for name, extra in settings.items():
        if "cuda_graph" in name and not graph:
            continue
        slug = re.sub(r"[^a-z0-9]+", "_", name)
        steps.append(Step(f"settings: {name}", _train(out, slug, [f"trainer={device}", *extra,
                                                                   *tiny]), 300))  # fmt: skip
    return steps


def run(step: Step, out: Path) -> None:
    """Run one step; keep its log; read its figures."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(step.command, cwd=ROOT, capture_output=True, text=True,
                              timeout=step.timeout)  # fmt: skip
        text, ok = proc.stdout + proc.stderr, proc.returncode == 0
        step.status = "ok" if ok else f"failed ({proc.returncode})"
    except subprocess.TimeoutExpired as err:
        text = str(err.stdout or "") + str(err.stderr or "")
        step.status = f"timed out after {step.timeout} s"
    step.seconds = time.perf_counter() - start
    slug = re.sub(r"[^a-z0-9]+", "_", step.name.lower()).strip("_")
    (out / f"{slug}.log").write_text(text)
    step.figures = figures(step, text)


def figures(step: Step, text: str) -> dict[str, str]:
    """What a step measured: test accuracy, tests passed, the benchmark's rows."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if m := re.search(r"Test accuracy \(.*?\): ([0-9.]+)", line):
            found["test/acc"] = m.group(1)
        if m := re.match(r"(\d+ passed.*|\d+ tests? collected.*|no tests ran.*)", line.strip()):
            found["tests"] = m.group(1)
        if m := re.match(
            r"\| ([^|]+) \| ([0-9.]+) \| [0-9]+ \| ([0-9.]+) \| ([+-][0-9.]+) \|", line
        ):
            found[m.group(1).strip()] = f"{m.group(2)} ms ({m.group(4)} over plain)"
    return found


def summary(steps: list[Step], dry: bool) -> str:
    lines = [f"GPU check{' (dry run on the CPU)' if dry else ''}", "",
             "| step | status | s | figures |", "| --- | --- | --- | --- |"]  # fmt: skip
    for s in steps:
        shown = "; ".join(f"{k}: {v}" for k, v in s.figures.items()) or "-"
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.0f} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny")
    p.add_argument("--out", type=Path, help="keep each step's log and gpu_check.json here")
    args = p.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: torch sees no CUDA GPU here; --dry-run checks the steps on the CPU",
                  file=sys.stderr)  # fmt: skip
            return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(out, args.dry_run)
    for step in steps:
        print(f"gpu_check: {step.name} ...", flush=True)
        run(step, out)
    result = [{"name": s.name, "status": s.status, "seconds": s.seconds, "figures": s.figures,
               "command": s.command} for s in steps]  # fmt: skip
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(summary(steps, args.dry_run))
    return 0 if all(s.status == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
