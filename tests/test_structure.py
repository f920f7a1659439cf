"""The house's shape: entry points that never import each other, layers, no set-up at import,
no private library API outside `src/compat.py`."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src"
# The private names `src/compat.py` wraps; nowhere else in src may use them.
PRIVATE = re.compile(
    r"hydra\._internal|_parse_gpu_ids|_SubprocessScriptLauncher|\._on_(before|after)_step"
    r"|_get_file_writer|\._return_value|lightning\.fabric\.utilities\.types\._"
    r"|_logger_connector|_batches_that_stepped|\._extract_stats"
)


def test_import_contracts_hold() -> None:
    """import-linter's contracts in .importlinter (also `make lint`)."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") == 2, proc.stdout


def test_private_library_apis_only_in_the_compatibility_module_and_no_module_is_long() -> None:
    """No module is over about 400 lines either."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, "\n".join(found)
    long = {
        str(p.relative_to(ROOT)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert not long, long


def test_importing_the_project_sets_nothing_up() -> None:
    """Every module of src imported in a fresh process: no resolver, environment variable,
    warning filter or log filter of the project's appears until `src.cli.setup()` runs. That
    process is a user's (not under pytest or CI, where MLflow turns telemetry off itself): after
    the set-up MLflow stays offline and quiet."""
    code = """
import importlib, logging, os, pkgutil, warnings
import lightning, omegaconf
before = len(warnings.filters)
import src
names = [m.name for m in pkgutil.walk_packages(src.__path__, "src.")]
for name in names:
    importlib.import_module(name)
R = omegaconf.OmegaConf.has_resolver
ours = ["run_name", "tag_dict", "sweep_subdir"]
filters = logging.getLogger("lightning.pytorch.utilities.rank_zero").filters
state = ([r for r in ours if R(r)], "MLFLOW_DISABLE_TELEMETRY" in os.environ,
         len(warnings.filters) - before, len(filters))
from src.cli import setup
setup()
after = ([r for r in ours if R(r)], "MLFLOW_DISABLE_TELEMETRY" in os.environ,
         len(warnings.filters) - before > 0, len(filters))
import mlflow
from mlflow.telemetry.utils import is_telemetry_disabled
mlflow_said = [is_telemetry_disabled(), logging.getLogger("mlflow").getEffectiveLevel()]
import json
print(json.dumps({"modules": len(names), "imported": state, "set_up": after,
                  "mlflow": mlflow_said}))
"""
    ci = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if k not in ci and not k.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["modules"] > 40
    assert seen["imported"] == [[], False, 0, 0], seen
    assert seen["set_up"] == [["run_name", "tag_dict", "sweep_subdir"], True, True, 1], seen
    assert seen["mlflow"] == [True, logging.WARNING]  # MLflow 3 would otherwise post usage data
