"""What a run prints: plain lines when nobody watches a terminal, a bar that never shares a line
with a message when someone does, a train.log holding it all, honest words, the config tree."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from src import cli as entry
from src.callbacks.progress import ProgressBar, epoch_number, progress_values
from src.reports import figures
from tests.conftest import ROOT, TINY, cli_in_process, run_cli

LOG_PREFIX = re.compile(r"\[20\d\d-\d\d-\d\d ")
PROGRESS = re.compile(
    r"\]\[src\.callbacks\.progress\]\[INFO\] - Epoch (\d+)/2, iteration (\d+)/12: "
    r"loss \d+\.\d{4}, elapsed \d\d:\d\d:\d\d$"
)


def assert_log_lines_start_lines(text: str) -> None:
    """No message glued to another line: every log prefix opens its line."""
    for line in text.splitlines():
        if LOG_PREFIX.search(line):
            assert LOG_PREFIX.match(line), f"glued: {line!r}"


def test_a_run_to_pipes_prints_plain_lines_and_logs_them_all(tmp_path: Path) -> None:
    """2 epochs of 6 iterations, output to pipes, the state not carried, and a Lightning warning
    (the logging interval is longer than an epoch): plain lines, the same in train.log, honest
    words about the state, and the config tree printed and saved."""
    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "trainer.max_epochs=2", "model.update_state=false",
                   "trainer.log_every_n_steps=50", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={run_dir}", timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    # no bar, one plain line per epoch
    out = proc.stdout + proc.stderr
    assert "\r" not in out  # no carriage-return frames at all
    assert_log_lines_start_lines(proc.stdout)
    found = [PROGRESS.search(line) for line in proc.stdout.splitlines()]
    epochs = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    assert epochs == [(1, 6), (2, 12)], proc.stdout[-3000:]
    # Lightning's own lines are printed once, as log lines on stdout, not also on stderr
    for line in ("GPU available: ", "`Trainer.fit` stopped: `max_epochs=2` reached."):
        assert out.count(line) == 1, line
    assert proc.stderr.strip() == ""

    # train.log holds Lightning's lines, warnings and the progress
    log = (run_dir / "train.log").read_text()
    assert "\r" not in log
    assert_log_lines_start_lines(log)
    assert "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available: " in log
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in log
    assert "[py.warnings][WARNING]" in log and "smaller than the logging interval" in log
    assert "[src.callbacks.bn_state][WARNING] - after 5 training iterations" in log
    assert len([ln for ln in log.splitlines() if PROGRESS.search(ln)]) == 2
    # everything printed as a log line is in the file, in the same order
    printed = [ln for ln in proc.stdout.splitlines() if LOG_PREFIX.match(ln)]
    logged = [ln for ln in log.splitlines() if LOG_PREFIX.match(ln) and "[src.console]" not in ln]
    assert printed == logged

    # model.update_state=false says nothing was carried
    assert (
        "Testing with bn_stats=running: the initial state (mean 0, variance 1): "
        "model.update_state=false, nothing was carried." in proc.stdout
    )
    assert "Test accuracy (initial state, not carried): " in proc.stdout
    # and so does evaluate, with the same figure (was: "running statistics")
    said = re.search(r"Test accuracy \(initial state, not carried\): [\d.]+", proc.stdout)[0]
    evaluated = cli_in_process(
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'evaluated'}",
        module="src.evaluate",
    )
    assert f"{said} on 100 images" in evaluated.stdout, evaluated.stdout[-2000:]
    assert "carried by the training loop" not in proc.stdout
    assert "State after training (initial state, not carried, used for prediction)" in proc.stdout

    # the config tree, printed and saved without escape codes
    tree = (run_dir / "config_tree.log").read_text()
    for group in ("data", "model", "optimizer", "trainer", "callbacks", "logger", "paths"):
        assert f"── {group}\n" in tree, group
    assert "batch_size: 32" in tree and "max_epochs: 2" in tree and "update_state: false" in tree
    assert "update_state: false" in (run_dir / ".hydra" / "config.yaml").read_text()  # Hydra's
    assert "${" not in tree  # resolved values
    assert "\x1b" not in tree + proc.stdout
    assert tree.splitlines()[1] in proc.stdout  # printed at the start, too
    assert tree.index("── data") < tree.index("── model") < tree.index("── trainer")


def test_an_unexpected_error_leaves_its_traceback_in_the_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry, "route_output", lambda: None)
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)

    def bug() -> None:
        raise RuntimeError("a bug")

    try:
        with pytest.raises(RuntimeError):
            entry.run_job(bug)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    log = (tmp_path / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: a bug" in log


# -- in a terminal -----------------------------------------------------------------------------
def run_in_terminal(args: list[str], timeout: float = 180) -> tuple[str, int]:
    """`python -m src.train ARGS` with a pseudo-terminal (120 columns) as stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=ROOT, env=env,
                            stdin=slave, stdout=slave, stderr=slave)  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=30)
    return b"".join(chunks).decode("utf-8", "replace"), code


def screen(raw: str) -> list[str]:
    """The lines a terminal would show: each carriage return goes back to the line's start and
    overwrites it (tqdm's frames); colour codes are dropped."""
    raw = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    lines = []
    for row in raw.split("\n"):
        shown: list[str] = []
        for part in row.split("\r"):
            shown[: len(part)] = part
        lines.append("".join(shown).rstrip())
    return lines


@pytest.mark.slow
def test_in_a_terminal_the_bar_never_shares_a_line_and_is_left_once(
    tmp_path: Path, cache_dir: Path
) -> None:
    """A message logged while the bar is live (population statistics, after the last epoch)
    and Lightning's stop line: each on a line of its own, the last bar shown once."""
    run_dir = tmp_path / "run"
    args = [*TINY, "model.bn_stats=population", "test=false", f"paths.cache_dir={cache_dir}"]
    raw, code = run_in_terminal([*args, f"hydra.run.dir={run_dir}"])
    assert code == 0, raw[-3000:]
    lines = screen(raw)
    assert_log_lines_start_lines("\n".join(lines))
    bars = [ln for ln in lines if ln.startswith("Epoch ")]
    assert len(bars) == 1 and bars[0].startswith("Epoch 1/1: 100%"), bars
    assert "loss=" in bars[0] and "iter=6" in bars[0] and "elapsed=00:00:" in bars[0]
    assert sum("`Trainer.fit` stopped" in ln for ln in lines) == 1
    assert sum("Batch-norm state replaced by population" in ln for ln in lines) == 1
    assert not [ln for ln in lines if "[src.callbacks.progress]" in ln]  # the bar says it here
    log = (run_dir / "train.log").read_text()
    assert "\r" not in log and "Epoch 1/1, iteration 6/6: loss " in log  # the file gets the line


# -- the pieces --------------------------------------------------------------------------------
class DeviceValue:
    """Stands for a loss still on a GPU: reading it would synchronise, so it must not be read."""

    device = SimpleNamespace(type="cuda")

    def numel(self) -> int:
        return 1

    def __float__(self) -> float:
        raise AssertionError("read a device value")


def test_progress_values_prefer_latest_and_never_read_device_values() -> None:
    trainer = SimpleNamespace(progress_bar_metrics={"train/loss": 0.5, "val/acc": 0.75})
    module = SimpleNamespace(latest={"train/loss": 0.25, "train/elapsed_s": 3.0, "bn1/x": 1.0})
    assert progress_values(trainer, module) == {
        "train/loss": 0.25, "train/elapsed_s": 3.0, "val/acc": 0.75,
    }  # fmt: skip
    module = SimpleNamespace(latest={"train/loss": DeviceValue()}, elapsed=lambda: 7.0)
    trainer = SimpleNamespace(progress_bar_metrics={"train/elapsed_s": DeviceValue()})
    assert progress_values(trainer, module) == {"train/elapsed_s": 7.0}


def test_plain_mode_follows_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: False))
    assert ProgressBar().plain and not ProgressBar().is_enabled
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: True))
    assert not ProgressBar().plain and ProgressBar().is_enabled
    assert ProgressBar(plain=True).plain
    with pytest.raises(ValueError, match="every_n_iterations"):
        ProgressBar(every_n_iterations=-1)


def test_the_bar_and_the_figure_count_epochs_from_1_alike() -> None:
    seen = {}

    class Spy(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen["bar"] = bar.train_progress_bar.desc.rstrip(": ")
            seen["figure"] = epoch_number(trainer)

    bar = ProgressBar(plain=False)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[bar, Spy()])  # fmt: skip
    trainer.fit(BoringModel())
    assert seen == {"bar": "Epoch 2/2", "figure": 2}


def test_confusion_matrix_title_says_when_nothing_was_carried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    titles = []

    def save(trainer, fig, filename, tag) -> Path:
        titles.append(fig.axes[0].get_title())
        return Path(filename)

    monkeypatch.setattr(figures, "save_figure", save)
    matrix = np.eye(3, dtype=int) * 4
    for stats, carried in (("running", True), ("running", False), ("population", False)):
        module = SimpleNamespace(last_confusion_matrix=matrix, bn_stats=stats, update_state=carried)
        figures.confusion_matrix(SimpleNamespace(), module)
    assert titles == [
        "Test accuracy 1.0000 (running statistics)",
        "Test accuracy 1.0000 (initial state, not carried)",
        "Test accuracy 1.0000 (population statistics)",
    ]
