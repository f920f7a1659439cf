"""What writing a block of per-iteration values to TensorBoard costs, hand-built against the
library's own calls, in one process, the contenders interleaved.

    python benchmarks/log_paths.py              # 7 repetitions of a 100-iteration block each

An iteration of the default run logs 15 scalars (`train/loss`, `train/elapsed_s`, `lr-SGD`, the
state watch's 12) and 6 histograms of 20 channels (`trainer.log_every_n_steps=1`). Contenders:

- `one event`: the project's `write_records` (src/model/step_block.py): one TensorBoard event
  an iteration holding all its scalars and histograms, the block's histograms computed together;
- `library`: `TensorBoardLogger.log_metrics` (an `add_scalar` a value) and
  `SummaryWriter.add_histogram` (an event a histogram), as Lightning and torch write them;
- the same two with the scalars only (the state monitor off: no histograms).

Each is timed from the first call to the writer's `flush()` (its thread serialises and writes
the events), in milliseconds an iteration; each ratio is taken within one repetition and the
median of them printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from src.model.step_block import StepRecord, write_records  # noqa: E402

ITERATIONS = 100


def block() -> list[tuple[int, dict[str, float], dict[str, torch.Tensor]]]:
    """A default run's block: 15 scalars and 6 histograms of 20 channels an iteration."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for step in range(ITERATIONS):
        scalars = {"train/loss": 1.0 / (step + 1), "train/elapsed_s": step * 0.07, "lr-SGD": 0.01}
        hists = {}
        for layer in ("bn1", "bn2", "bn3"):
            for key in ("running_mean_avg", "running_var_avg", "batch_mean_gap", "batch_var_ratio"):
                scalars[f"{layer}/{key}"] = float(torch.rand((), generator=g))
            for key in ("running_mean", "running_var"):
                hists[f"{layer}/{key}"] = torch.rand(20, generator=g).double().numpy()
        rows.append((step, scalars, hists))
    return rows


def library(logger: TensorBoardLogger, rows: list) -> None:
    for step, scalars, hists in rows:
        logger.log_metrics(scalars, step=step)
        for tag, values in hists.items():
            logger.experiment.add_histogram(tag, values, step, bins=10)


def one_event(logger: TensorBoardLogger, rows: list) -> None:
    write_records(logger, [StepRecord(step, scalars, hists) for step, scalars, hists in rows])


def one_event_scalars(logger: TensorBoardLogger, rows: list) -> None:
    write_records(logger, [StepRecord(step, scalars) for step, scalars, _ in rows])


def library_scalars(logger: TensorBoardLogger, rows: list) -> None:
    for step, scalars, _ in rows:
        logger.log_metrics(scalars, step=step)


def main(reps: int = 7) -> dict[str, float]:
    rows = block()
    contenders = {"one event": one_event, "library": library,
                  "one event, scalars only": one_event_scalars,
                  "library, scalars only": library_scalars}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        loggers = {n: TensorBoardLogger(Path(tmp) / n.replace(" ", "_")) for n in contenders}
        for name, write in contenders.items():  # warm-up: the writers' files and threads
            write(loggers[name], rows[:2])
            loggers[name].experiment.flush()
        for _ in range(reps):
            for name, write in contenders.items():
                start = time.perf_counter()
                write(loggers[name], rows)
                loggers[name].experiment.flush()
                times[name].append((time.perf_counter() - start) / ITERATIONS * 1000)
    out = {name: statistics.median(t) for name, t in times.items()}
    print(f"| contender | ms an iteration (median of {reps}) | ratio to one event |")
    print("| --- | --- | --- |")
    for name, t in times.items():
        mate = times["one event" if "scalars" not in name else "one event, scalars only"]
        ratio = statistics.median(a / b for a, b in zip(t, mate))  # within each repetition
        print(f"| {name} | {out[name]:.3f} | {ratio:.2f} |")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
