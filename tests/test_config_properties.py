"""Every number and switch of every config group, drawn out of range, of the wrong type, NaN,
infinite or huge: refused through `cli()` in one line naming the key, exit code 2.

The keys come from conf/ itself (every option of every group), so a new key is covered without
touching this file; a key whose bad values are not the project's to refuse goes in ALLOWED with
the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from src.config.schema import NULLABLE, leaves
from tests.conftest import CONF, assert_one_line_error, cli_in_process

# Groups that only bundle other groups' values (checked there) or Hydra's own settings.
SKIPPED_GROUPS = ("hydra", "experiment", "debug", "hparams_search")
# What an option needs to compose at all, beyond choosing it.
NEEDS = {
    "data=folder": ["data.root=/nonexistent"],
    "data=mat": ["data.root=/nonexistent"],
    "data=mnist": ["data.root=/nonexistent"],
    "+callbacks/early_stopping=val_acc": ["data.val_fraction=0.1"],
    "scheduler=plateau": ["data.val_fraction=0.1"],
}
# key -> the lowest value that is still valid, for keys where a negative value means something.
LOWEST_VALID = {"trainer.num_sanity_val_steps": -1, "trainer.devices": -1}
# Keys whose bad values are legitimately left unchecked here, and why.
ALLOWED: dict[str, str] = {}


def _option_override(rel: Path) -> list[str]:
    """The overrides that put the option file `rel` (under conf/) into the composed config."""
    if len(rel.parts) == 1:
        return []
    if len(rel.parts) == 3:  # callbacks/early_stopping/val_acc.yaml: an addable entry
        return [f"+{rel.parts[0]}/{rel.parts[1]}={rel.stem}"]
    return [f"{rel.parts[0]}={rel.stem}"]


def config_keys() -> list[tuple[str, str, Any, list[str]]]:
    """(dotted key, kind 'bool'/'int'/'float', its value, overrides choosing its option) for every
    number or switch of every option under conf/, a list's items included (key `a.b.0`)."""
    found: dict[str, tuple[str, str, Any, list[str]]] = {}
    # An option the plain run composes first (trainer=auto), so a key is tried where it is used.
    chosen = {
        f"{k}/{v}.yaml"
        for d in OmegaConf.load(CONF / "config.yaml").defaults
        if isinstance(d, dict)
        for k, v in d.items()
    }
    paths = sorted(
        CONF.rglob("*.yaml"),
        key=lambda p: (p.relative_to(CONF).as_posix() not in chosen and p.stem != "default", p),
    )
    for path in paths:
        rel = path.relative_to(CONF)
        if rel.parts[0] in SKIPPED_GROUPS or (len(rel.parts) == 1 and rel.name != "config.yaml"):
            continue
        prefix = ".".join(rel.parts[:-1] if len(rel.parts) < 3 else rel.parts[:2])
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        node.pop("defaults", None)
        overrides = _option_override(rel)
        overrides += [n for o in overrides for n in NEEDS.get(o, [])]

        for key, value in leaves(node, prefix):
            if isinstance(value, (bool, int, float)) and key not in found:
                found[key] = (key, type(value).__name__, value, overrides)
    return sorted(found.values())


KEYS = [k for k in config_keys() if k[0] not in ALLOWED]


def _override(key: str, text: str, overrides: list[str]) -> list[str]:
    """`key=text`; a list item (`optimizer.betas.0`) is set by writing its whole list."""
    head, _, last = key.rpartition(".")
    if last.isdigit():
        listed = _list_default(head)
        listed[int(last)] = text
        return [f"{head}=[{','.join(listed)}]"]
    return [f"{key}={text}"]


def _list_default(key: str) -> list[str]:
    """The list at `key` as its option file has it, each item as override text."""
    for path in CONF.rglob("*.yaml"):
        rel = path.relative_to(CONF)
        if rel.parts[0] != key.split(".")[0] or len(rel.parts) != 2:
            continue
        value = OmegaConf.select(OmegaConf.load(path), key.split(".", 1)[1], default=None)
        if OmegaConf.is_list(value):
            return [str(v) for v in value]
    raise KeyError(key)


WRONG_TYPES = ["abc", "[1,2]", "{a: 1}", "''", "null"]


def bad_values(kind: str, key: str) -> st.SearchStrategy[str]:
    """Override texts that no number or switch of `kind` at `key` may take."""
    # null is a value where the project gives it a meaning (data.test_batch_size: the batch size)
    wrong = [t for t in WRONG_TYPES if not (t == "null" and key in NULLABLE)]
    special = st.sampled_from(["nan", "inf", "-inf", *wrong])
    if kind == "bool":
        numbers = st.integers(-(2**70), 2**70).map(str) | st.floats(allow_nan=False).map(repr)
        return special | numbers | st.sampled_from(["yes_please", "0.5"])
    lowest = LOWEST_VALID.get(key, 0)
    huge_float = st.floats(1e39, 1e308).map(repr)  # beyond float32, which the network uses
    huge_int = st.integers(2**63, 2**80).map(str)  # beyond a C long
    negative = st.integers(-(2**62), lowest - 1).map(str)
    flags = st.sampled_from(["true", "false"])
    choices = special | huge_float | flags
    if kind == "int":
        fractions = st.floats(0.25, 1e6).filter(lambda v: v != int(v)).map(repr)
        choices = choices | huge_int | fractions
    if key not in ("trainer.devices",):
        choices = choices | negative
    return choices


# Each example is a composition (~0.3 s) and the keys are many: one example a key in the quick
# loop (a new draw every run), more in the slow one.
@pytest.mark.parametrize("examples", [1, pytest.param(3, marks=pytest.mark.slow)])
@pytest.mark.parametrize(("key", "kind", "default", "option"), KEYS, ids=[k[0] for k in KEYS])
def test_every_key_refuses_bad_values(
    key: str, kind: str, default: Any, option: list[str], examples: int
) -> None:
    """Bad values drawn for `key`, given through `cli()`: exit 2, one line naming the key."""

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(data=st.data())
    def refused_in_one_line(data: st.DataObject) -> None:
        text = data.draw(bad_values(kind, key), label=key)
        # --cfg job: were the value ever accepted, Hydra would print the config, not train.
        args = [
            *option,
            *_override(key, text, option),
            "hydra.run.dir=/nonexistent/run",
            "--cfg",
            "job",
        ]
        head = key.rpartition(".")[0] if key.rpartition(".")[2].isdigit() else key
        assert_one_line_error(cli_in_process(*args), head, code=2)

    refused_in_one_line()


def test_the_keys_cover_every_group() -> None:
    """The walk finds the keys the issue named, so a broken walk cannot pass vacuously."""
    keys = {k[0] for k in KEYS}
    for key in (
        "callbacks.model_checkpoint.every_n_train_steps",
        "scheduler.scheduler.step_size",
        "scheduler.scheduler.gamma",
        "optimizer.betas.0",
        "model.num_filters",
        "data.grayscale",
        "trainer.max_epochs",
        "callbacks.early_stopping.patience",
    ):
        assert key in keys
    assert len(keys) >= 50


def test_one_tag_given_as_a_string_is_a_list_of_one() -> None:
    """`tags=notalist` was split into letters (n-o-t-a-l-i-s-t)."""
    from src.runtime.loggers import run_name, tag_dict

    assert tag_dict("notalist") == {"notalist": "true"}
    assert tag_dict(["a", "b"]) == {"a": "true", "b": "true"}
    assert run_name("notalist", "/out/2025-01-31_12-00-00") == "notalist_2025-01-31_12-00-00"
    proc = cli_in_process("tags=notalist", "hydra.run.dir=/nonexistent/run", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
