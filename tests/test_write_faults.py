"""Every file the project writes, made to fail as a full disk fails it: one `error:` line, exit
code 4, and the file that was there before intact (`src.io.output_file`)."""

from __future__ import annotations

import errno
import io
import shutil
from pathlib import Path

import lightning as L
import pytest

import src.io as io_module
from src.checkpoint import read_checkpoint
from src.config import compose
from src.errors import OutputWriteError
from src.io import output_file, write_text
from tests.conftest import TINY, assert_last_line_error, assert_one_line_error, cli_in_process
from tests.test_sources import digits, write_tree

PREVIOUS = b"the previous file\n"


def full_disk_at(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Path]:
    """Writes of a file called `name` fail as a full disk fails them, once written in part: the
    partial temporary file exists when the error comes. Returns the paths that failed."""
    failed: list[Path] = []
    commit = io_module._commit

    def failing(tmp: Path, path: Path) -> None:
        if path.name != name:
            return commit(tmp, path)
        failed.append(path)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module, "_commit", failing)
    return failed


def no_temporary_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if ".tmp" in p.name]
    assert not left, left


# ---------------------------------------------------------------------------------------------
# The one write path itself


@pytest.mark.parametrize(
    "stop",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["full-disk", "signal"],
)
def test_output_file_keeps_the_previous_file(tmp_path: Path, stop: BaseException) -> None:
    """A full disk is a write failure naming the file; a signal's exception (or a bug)
    mid-write goes on unchanged. Either way the file is as before."""
    path = tmp_path / "metrics.json"
    path.write_bytes(PREVIOUS)
    want = OutputWriteError if isinstance(stop, OSError) else KeyboardInterrupt
    with pytest.raises(want) as caught:
        with output_file(path, "metrics") as tmp:
            tmp.write_text("half of it")
            raise stop
    assert path.read_bytes() == PREVIOUS
    if want is OutputWriteError:
        assert str(caught.value).startswith(f"could not write metrics {path}: No space left")
    no_temporary_files(tmp_path)


def test_write_text_maps_a_folder_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError, match="could not write file"):
        write_text(tmp_path / "file" / "sub" / "a.json", "{}")


# ---------------------------------------------------------------------------------------------
# Through the commands: exit code 4, one line, the previous file intact


def test_a_full_disk_at_a_checkpoint_is_exit_4(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third checkpoint's file fills the disk part way: one line that says so (torch.save
    writing to the file said `[enforce fail at inline_container.cc] unexpected pos`; before
    that, exit 1 with its traceback); last.ckpt stays the second one."""
    opened = []

    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            super().write(bytes(data)[:64])
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_(file, mode="r", *args, **kwargs):
        opened.append(file)
        if len(opened) == 3:
            return FullDisk(file, mode)
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io_module, "open", open_, raising=False)  # the module's own name
    run = tmp_path / "run"
    args = [*TINY, "logger=none", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}"]
    proc = cli_in_process(*args, "callbacks.model_checkpoint.every_n_train_steps=1")
    line = assert_last_line_error(proc, "No space left on device", "last.ckpt", code=4)
    assert line.startswith("error: could not write checkpoint")
    assert line in (run / "train.log").read_text()
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert not (run / "metrics.json").exists()
    no_temporary_files(run)


class EventFolderFails(L.Callback):
    """From the second iteration on, the run's TensorBoard event file cannot be written: the disk
    is full (`how="full"`: every write to it writes half, then fails as a full disk does), or
    its folder is gone (`how="gone"`: removed, as a clean-up script or another user might)."""

    full = False

    def __init__(self, how: str) -> None:
        self.how = how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx != 1 or EventFolderFails.full:
            return
        if self.how == "gone":
            shutil.rmtree(trainer.logger.log_dir)
        EventFolderFails.full = self.how == "full"


# The writer thread's own traceback: pytest catches it (it would reach stderr), as this warning.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("how", ["full", pytest.param("gone", marks=pytest.mark.slow)])
def test_a_tensorboard_write_failure_is_exit_4(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """It was exit 4 with the writer thread's traceback, and a line naming no file."""
    from tensorboard.compat.tensorflow_stub.io.gfile import LocalFileSystem

    append = LocalFileSystem.append  # TensorBoard's writer thread appends each event so

    def full_disk(self, filename, file_content, binary_mode=False) -> None:
        if not (EventFolderFails.full and "tfevents" in str(filename)):
            return append(self, filename, file_content, binary_mode)
        append(self, filename, file_content[: len(file_content) // 2], binary_mode)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalFileSystem, "append", full_disk)
    monkeypatch.setattr(EventFolderFails, "full", False)
    run = tmp_path / "run"
    proc = cli_in_process(
        *TINY, "logger=tensorboard", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "+callbacks.event_folder_fails._target_=tests.test_write_faults.EventFolderFails",
        f"+callbacks.event_folder_fails.how={how}",
    )  # fmt: skip
    reason = "No space left on device" if how == "full" else "No such file or directory"
    line = assert_one_line_error(
        proc, reason, f": '{run / 'tensorboard'}/events.out.tfevents.", code=4
    )
    assert line in (run / "train.log").read_text()
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] >= 1  # whole
    assert not (run / "metrics.json").exists()
    no_temporary_files(run)


def slow(*values: object) -> object:
    """A row of the table for the slow loop."""
    return pytest.param(*values, marks=pytest.mark.slow)


TRAIN = [*TINY, "logger=none"]


@pytest.mark.parametrize(
    ("module", "args", "name"),
    [
        slow("src.train", TRAIN, "metrics.json"),
        slow("src.train", TRAIN, "config.yaml"),
        slow("src.train", TRAIN, "config_tree.log"),
        slow("src.train", TRAIN, "training_progress.png"),
        slow("src.train", TRAIN, "confusion_matrix.png"),
        ("src.export", ["format=onnx", "CKPT"], "model.onnx"),
        slow("src.export", ["format=mat", "CKPT"], "model.mat"),
        slow("src.export", ["format=onnx", "CKPT"], "export.json"),
        slow("src.evaluate", ["CKPT"], "metrics.json"),
        slow("src.evaluate", ["CKPT"], "confusion_matrix.png"),
        slow("src.predict", ["images=IMAGE", "CKPT"], "predictions.csv"),
    ],
)
def test_a_full_disk_in_a_command_is_exit_4(
    ckpt: Path,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    args: list[str],
    name: str,
) -> None:
    """Training's files, and the other commands' (`src.export format=onnx` on a full disk left a
    corrupt model.onnx behind)."""
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "seven.png")
    image, saved = str(tmp_path / "seven.png"), f"ckpt_path={ckpt}"
    args = [a.replace("IMAGE", image).replace("CKPT", saved) for a in args]
    failed = full_disk_at(monkeypatch, name)
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(PREVIOUS)
    # The file as an earlier run's result: the folder check would refuse the run before it
    # writes (test_bad_input); here the write itself is tested.
    monkeypatch.setattr(compose, "check_run_folder_free", lambda cfg: None)
    proc = cli_in_process(*args, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}",
                          module=module)  # fmt: skip
    assert_last_line_error(proc, name, "No space left on device", code=4)
    assert failed and (run / name).read_bytes() == PREVIOUS
    no_temporary_files(run)


@pytest.mark.parametrize("name", ["summary.csv", "summary.txt", "seeds.csv", "sweep.png"])
def test_a_full_disk_at_the_sweep_summary_is_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, name: str
) -> None:
    """It was a warning and exit 0; the other outputs are still written."""
    from src.sweep.rows import Row
    from src.sweep.summary import SweepSummary

    failed = full_disk_at(monkeypatch, name)
    (tmp_path / name).write_bytes(PREVIOUS)
    summary = SweepSummary()
    summary.keys = ["optimizer.lr", "seed"]
    for job, (lr, seed) in enumerate([("0.1", "0"), ("0.1", "1")]):
        values = {"optimizer.lr": lr, "seed": seed}
        summary.rows[job] = Row(job, values, [f"{k}={v}" for k, v in values.items()])
        summary.rows[job].metrics = {"test/acc": 0.5 + job / 10}
    with pytest.raises(SystemExit) as stop:
        summary.finish(tmp_path)
    assert stop.value.code == 4
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: sweep summary: could not write")
    assert name in lines[0]
    assert failed and (tmp_path / name).read_bytes() == PREVIOUS
    others = {"summary.csv", "summary.txt", "seeds.csv"} - {name}
    assert all((tmp_path / o).exists() for o in others)


def test_a_broken_link_in_an_image_folder_is_bad_input(tmp_path: Path, cache_dir: Path) -> None:
    """It was exit 4, 'write failed', for a file that could not be read."""
    write_tree(tmp_path / "digits", digits(0, per_class=2))
    (tmp_path / "digits" / "3" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    run = tmp_path / "run"
    proc = cli_in_process(
        "data=folder", f"data.root={tmp_path / 'digits'}", "trainer=cpu", "logger=none",
        f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert_last_line_error(proc, "gone.png", code=2)
