"""`python -m src.train` as a user runs it: overrides, sweeps, and one-line errors."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY, assert_one_line_error, cli_in_process


def test_gpu_without_cuda_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer=gpu where PyTorch sees no GPU; simulated, so the test holds on GPU machines too."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "run"
    proc = cli_in_process("trainer=gpu", f"hydra.run.dir={run_dir}")
    assert_one_line_error(proc, "trainer.accelerator=gpu", "no CUDA GPU")
    assert not run_dir.exists()


def test_a_plain_run_composes_its_config_once_and_checks_it_once(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config composed and checked before the run folder exists is the one Hydra runs, and
    the job takes it as checked (`@hydra.main` alone composes twice; issue 22 counted three)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import src.train
    from src.config import rules

    compositions, checks = [], []
    load, check = ConfigLoaderImpl.load_configuration, rules.check_config

    def counted_load(self, *args, **kwargs):
        compositions.append(args)
        return load(self, *args, **kwargs)

    def counted_check(cfg):
        checks.append(cfg)
        return check(cfg)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted_load)
    monkeypatch.setattr(rules, "check_config", counted_check)  # the command line's check
    monkeypatch.setattr(src.train, "check_config", counted_check)  # the job's, if it checked
    run_dir = tmp_path / "run"
    # `tags=[${seed}]`: iterating Hydra's record of the overrides resolved it where nothing
    # can (HydraConfig's own node), and the config tree took the list out of the config: both
    # were tracebacks. The run's record keeps it as typed.
    proc = cli_in_process(*TINY, "logger=none", "reports=none", "tags=[${seed}]",
                          f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(compositions) == 1 and len(checks) == 1
    assert "tags=[${seed}]" in json.loads((run_dir / "metrics.json").read_text())["overrides"]
    assert "├── tags:\n│   - 0\n" in (run_dir / "config_tree.log").read_text()
    assert (run_dir / "train.log").is_file()
    assert "hydra.mode=RUN" in (run_dir / ".hydra" / "hydra.yaml").read_text()


def test_an_unquoted_value_with_letters_outside_ascii_means_what_was_typed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run dir ü"
    proc = cli_in_process("--cfg", "hydra", f"hydra.run.dir={run_dir}")  # Hydra reads it too
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["hydra"]["run"]["dir"] == str(run_dir)  # wrapped or not
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("typed", "passed"),
    [
        ("hydra.run.dir=runs/run dir ü", "hydra.run.dir='runs/run dir ü'"),
        ("+data.note=  Grüße  ", "+data.note='Grüße'"),  # unquoted, its edges' blanks go
        ("paths.x=C:\\ü\\", "paths.x='C:\\ü\\\\'"),  # no \' at the closing quote
        ("paths.x=${paths.root_dir}/ü", "paths.x='${paths.root_dir}/ü'"),
        ("paths.x='ü'", "paths.x='ü'"),  # quoted already
        ("paths.x=plain", "paths.x=plain"),
    ],
)
def test_values_outside_ascii_are_quoted_as_one_string(typed: str, passed: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.config.compose import quoted_for_hydra

    assert quoted_for_hydra(["--multirun", typed]) == ["--multirun", passed]
    value = OverridesParser.create().parse_override(passed).value()
    assert value == typed.partition("=")[2].strip().strip("'")


@pytest.mark.parametrize(
    ("args", "printed"),
    [(["--help"], "Powered by Hydra"), (["--shell-completion", "install=bash"], "complete -")],
)
def test_hydras_informational_calls_are_hydras(args: list[str], printed: str) -> None:
    proc = cli_in_process(*args)
    assert proc.returncode == 0, proc.stderr
    assert printed in proc.stdout


def test_a_resume_command_quotes_a_path_hydra_would_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning names its checkpoints epoch=3-step=40.ckpt: unquoted, Hydra's grammar fails."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.cli import failure, resume_command
    from src.errors import RunStopped

    path = "/runs/it's a \\run~/epoch=3-step=40.ckpt\\"
    words = shlex.split(resume_command(path))
    assert words[:3] == ["python", "-m", "src.train"] and words[3].startswith("ckpt_path=")
    assert OverridesParser.create().parse_override(words[3]).value() == path
    # a sweep job's finished training: its folder holds '=' too (was unquoted: exit 2 if pasted)
    line, code = failure(RunStopped(signal.SIGINT, Path(path), 4, finished=True))
    words = shlex.split(line.split("Test it with: ", 1)[1])
    assert words[:3] == ["python", "-m", "src.evaluate"] and code == 130
    assert OverridesParser.create().parse_override(words[3]).value() == path
    # in a sweep, running it again completes the job's row (src.evaluate would not)
    monkeypatch.setattr("src.config.rules.in_multirun", lambda cfg=None: True)
    line, _ = failure(RunStopped(signal.SIGINT, Path(path), 4, finished=True))
    assert line.endswith("is complete. Resume with: the sweep's own command again (it skips "
                         "finished jobs and resumes this one)")  # fmt: skip


def test_cfg_prints_a_commands_config_with_what_is_still_to_give() -> None:
    """`--cfg job` as in plain Hydra: `???` where a value is still to give (it was refused:
    'ckpt_path must be set'); a value given is checked as ever (test_bad_input's --cfg rows)."""
    for module, args, shown in (
        ("src.evaluate", [], "ckpt_path: ???"),
        ("src.predict", ["ckpt_path=/x"], "images: ???"),
    ):
        proc = cli_in_process("--cfg", "job", *args, module=module)
        assert proc.returncode == 0 and shown in proc.stdout.splitlines(), proc.stderr[-2000:]
