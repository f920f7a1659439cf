"""The config checks: values of each group (`schema`), the entries that name classes (`targets`),
the rules that tie groups together (`rules`), and the command line composed and checked before
Hydra makes a run folder (`compose`)."""

from pathlib import Path

# The project's config folder, absolute: an entry point finds it whether it runs as
# `python -m src.train` or is imported.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
