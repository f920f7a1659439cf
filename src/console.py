"""What a run prints, and where it goes.

- Log lines never share a line with the progress bar: while a job runs, the console handler
  Hydra installs writes through `tqdm.write` (tqdm's `logging_redirect_tqdm`, `src.cli.run_job`).
- The run's log file (Hydra's `train.log`) holds what the terminal shows: Lightning's own lines
  (its `lightning.pytorch` logger otherwise prints to stderr past Hydra's handlers) and Python
  warnings go through the root logger too (`route_output`).
- A failed write to a TensorBoard event file (a full disk) is said once, by the main thread
  (`route_output`).
- The composed config, printed as a tree at the start and saved as `config_tree.log`
  (`print_config_tree`, atomically); rich is imported only then.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf

from src.compat import event_writer_file
from src.io import write_text

log = logging.getLogger(__name__)

# Loggers that print by themselves, past Hydra's handlers: Lightning gives `lightning` a stderr
# handler of its own, and the other two one as well when imported before logging is configured.
OWN_HANDLER_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# The order a person reads the config in; other keys follow in the config's own order.
TREE_ORDER = ("data", "model", "optimizer", "trainer", "callbacks", "logger", "paths")


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def route_output() -> None:
    """Once a job's logging is configured (Hydra's console and file handlers on the root
    logger): send Lightning's lines and Python warnings through those handlers, so they reach
    `train.log` and are printed once. A failed
    TensorBoard write is said once, by the main thread (`_event_write_failed`)."""
    if threading.excepthook is not _event_write_failed:
        _hooks["previous"] = threading.excepthook
        threading.excepthook = _event_write_failed
    root = logging.getLogger()
    if not root.handlers:  # no job logging (a test calling train() directly): leave it as is
        return
    logging.captureWarnings(True)
    for name in OWN_HANDLER_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


_hooks: dict[str, Any] = {"previous": threading.excepthook}


def _event_write_failed(args: threading.ExceptHookArgs) -> None:
    """TensorBoard writes its event file in a thread of its own. A write that fails there (a
    full disk) is printed by that thread as a traceback, then raised again in the main thread
    at its next write, which ends the run with one line (exit 4): that line only, with the
    file's name, which a failed `write()` does not give."""
    err = args.exc_value
    path = event_writer_file(args.thread) if isinstance(err, OSError) else None
    if path is None:
        return _hooks["previous"](args)
    # The same object the main thread raises (it may have already: then its line names none).
    if err.filename is None or isinstance(err.filename, bytes):  # TensorBoard opens it by bytes
        err.filename = path


def text_table(
    header: list[str], rows: list[list[str]], right: set[int], indent: str = "  ", rule: str = "-"
) -> str:
    """A plain aligned table (columns `right` right-aligned, a `rule` line under the header
    unless it is empty): reads the same on a terminal and in a log file."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return indent + "  ".join(out).rstrip()

    rules = [line([rule * w for w in widths])] if rule else []
    return "\n".join([line(header), *rules, *map(line, rows)])


def log_to_files(logger: logging.Logger, level: int, msg: str, *args: Any) -> None:
    """Log to the run's log file(s) only, not to the terminal (which shows it another way)."""
    record = logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def config_tree(cfg: DictConfig, colour: bool = False, width: int = 100) -> tuple[str, str]:
    """The resolved config as a rich tree: each group a branch holding its YAML, the run's own
    settings (seed, test, ...) as leaves. Returns what to print (YAML keys coloured if `colour`;
    no pygments, which costs more start-up than the whole tree) and the same as plain text."""
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    def yaml(node: Any) -> Text:
        text = Text()
        for line in OmegaConf.to_yaml(node, resolve=True).rstrip("\n").splitlines():
            key, colon, value = line.partition(": ") if ": " in line else line.rpartition(":")
            if colon and not key.lstrip().startswith(("'", '"')):
                text.append(key, style="cyan").append(colon).append(value + "\n")
            else:  # a list item or a value on its own
                text.append(line + "\n")
        text.rstrip()
        return text

    tree = Tree("config", guide_style="dim")
    keys = [str(k) for k in cfg.keys() if k != "hydra"]
    for key in [*(k for k in TREE_ORDER if k in keys), *(k for k in keys if k not in TREE_ORDER)]:
        node = cfg[key]
        if isinstance(node, DictConfig):
            tree.add(Text(key, style="bold")).add(yaml(node))
        else:
            # resolved in place: a list taken out of the config could not reach ${seed}, say
            tree.add(yaml({key: OmegaConf.to_container(node, resolve=True)
                           if OmegaConf.is_config(node) else node}))  # fmt: skip
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, force_terminal=colour, no_color=not colour,
        color_system="auto" if colour else None, highlight=False, markup=False, emoji=False,
        record=True,
    )  # fmt: skip
    console.print(tree)

    def trimmed(text: str) -> str:
        return "".join(line.rstrip() + "\n" for line in text.splitlines())

    return trimmed(buffer.getvalue()), trimmed(console.export_text(styles=False))


def print_config_tree(cfg: DictConfig, path: Path | None = None) -> None:
    """Print the config tree (in colour only in a terminal) and save it as plain text at
    `path`; the run's log file gets the plain text too."""
    colour = is_terminal(sys.stdout)
    width = shutil.get_terminal_size((100, 24)).columns if colour else 100
    shown, plain = config_tree(cfg, colour=colour, width=width)
    if path is not None:
        write_text(path, plain, "config tree")
    sys.stdout.write(shown)
    sys.stdout.flush()
    log_to_files(log, logging.INFO, "Config (saved as %s):\n%s", path, plain.rstrip("\n"))


def hydra_quoted(path: Any) -> str:
    """A path as a Hydra override's value: quoted where it holds what Hydra's grammar reads,
    such as the `=` of Lightning's `epoch=3-step=40.ckpt` or of a sweep's job folder."""
    text = str(path)
    if not re.fullmatch(r"[\w/.+@%:-]+", text):  # Hydra's quotes: a backslash escapes a quote
        escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
        text = "'" + re.sub(r"\\+$", lambda m: m.group() * 2, escaped) + "'"
    return text
