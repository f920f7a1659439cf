"""The one way this project writes a file: atomically (a temporary file beside it, fsynced, then
renamed over it), so a full disk, a signal or a kill never leaves a half-written output."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from src.errors import OutputWriteError, first_line


def write_atomically(data: Any, path: Path) -> None:
    """`torch.save` of `data` to `path` through `output_file` (so `path` always holds a complete
    checkpoint). Serialized in memory first, as Lightning's own save does: torch.save writing to
    the file reports a full disk as `[enforce fail at inline_container.cc] unexpected pos`, the
    file's own write as the OSError it is (`No space left on device`, exit code 4).
    """
    buffer = io.BytesIO()
    torch.save(data, buffer)
    with output_file(path, "checkpoint") as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


@contextlib.contextmanager
def output_file(path: Path, what: str = "file") -> Iterator[Path]:
    """The one way this project writes a file: yields a temporary path beside `path` (same
    folder, so same filesystem; same suffix, for writers that go by it), which the caller
    writes; it is then fsynced and renamed over `path`. `path` so always holds the previous
    complete file or the new complete one, whatever stops the write (a full disk, a signal, a
    kill). A failure (OSError) becomes `OutputWriteError`: one line naming
    the file, exit code 4; the temporary file is removed.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
        )
        os.close(fd)
        tmp = Path(name)
        mask = os.umask(0)  # reading the umask sets it: set it back
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; an output is an ordinary file
        yield tmp
        _commit(tmp, path)
    except BaseException as err:
        if tmp is not None:  # a failure before it was made leaves nothing to remove
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, OutputWriteError):
            reason = err.strerror or first_line(err)
            raise OutputWriteError(
                err.errno,
                f"could not write {what} {path}: {reason}; the previous {what} there (if any) is "
                "intact",
            ) from err
        raise
    # Make the rename itself durable: not every filesystem lets a folder be fsynced; the file
    # itself is complete.
    with contextlib.suppress(OSError):
        _fsync(path.parent)


def _commit(tmp: Path, path: Path) -> None:
    """The written temporary file made durable, then put in place."""
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str, what: str = "file") -> None:
    """`text` written to `path` through `output_file`."""
    with output_file(path, what) as tmp:
        tmp.write_text(text)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A header and rows written to `path` through `output_file`."""
    with output_file(path) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
