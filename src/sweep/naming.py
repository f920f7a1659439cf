"""Which keys a sweep varies, and the job folder names built from them (`hydra.sweep.subdir`).

Hydra's own `hydra.job.override_dirname` names a job by every override, full keys, sorted, with
slashes kept (`data.root=/tmp/x,optimizer.lr=0.05,seed=1,trainer=cpu`: nested folders). These
names keep the job number Hydra gives (`hydra.job.num`) and only the keys the sweep varies."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.config.compose import parse_overrides, sweeper_params

MAX_NAME = 100  # characters of a job folder's name after the number (names are ASCII)


@dataclass
class Plan:
    """The keys a sweep varies (in command-line order), and how many jobs it launches."""

    keys: list[str] = field(default_factory=list)
    jobs: int | None = None  # where known
    width: int | None = None  # of the job numbers, where the sweep's folder has jobs already


# The plan of the sweep this process runs. Set by SweepSummary: by `on_multirun_start` in the
# launching process, and by its unpickling in a job's own process (joblib, submitit), which
# comes before Hydra resolves the job's folder there. Read by `sweep_subdir` and
# src.runtime.threads.
current: Plan | None = None


def sweep_overrides(master: DictConfig) -> list[Any]:
    """A multirun config's overrides, parsed: the command line's, then those of
    `hydra.sweeper.params` for the keys the command line does not set."""
    task = OmegaConf.to_container(
        OmegaConf.select(master, "hydra.overrides.task", default=None) or OmegaConf.create([]),
        resolve=False,
    )  # as typed: ${...} too
    return parse_overrides([*task, *sweeper_params(master, task)])


def plan_of(master: DictConfig) -> Plan:
    """The swept keys of a multirun config (command line and `hydra.sweeper.params`)."""
    plan, jobs = Plan(), 1
    final = {o.get_key_element(): o for o in sweep_overrides(master)}  # a key's last: Hydra's
    for o in final.values():
        if not o.is_sweep_override():
            continue
        plan.keys.append(o.key_or_group)
        try:
            jobs *= len(list(o.sweep_string_iterator()))
        except Exception:  # an interval or other sweep without a fixed list of values
            jobs = 0
    plan.jobs = jobs or None
    trials = OmegaConf.select(master, "hydra.sweeper.n_trials", default=None)  # e.g. Optuna's
    if plan.jobs is None and isinstance(trials, int) and trials > 0:
        plan.jobs = trials
    return plan


def _value(o: Any) -> str:
    """An override's value as typed, without the quotes that protect it."""
    value = o.value()
    return value if isinstance(value, str) else o.get_value_element_as_str()


def short_names(keys: list[str]) -> dict[str, str]:
    """`optimizer.lr` -> `lr`, unless another key would read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def swept_values(overrides: Iterable[str], keys: list[str]) -> dict[str, str]:
    """`{key: value}` of a job's overrides, for the swept keys, in the sweep's order."""
    found = {o.key_or_group: _value(o) for o in parse_overrides(overrides) if not o.is_delete()}
    return {k: found[k] for k in keys if k in found}


def shown(value: str) -> str:
    """A value as the names and tables show it: a sampled 0.0034567890123 as 0.003457."""
    if re.fullmatch(r"[-+]?\d*\.\d{7,}(e[-+]?\d+)?", value):  # more digits than anyone types
        return f"{float(value):.4g}"
    return value


def _readable(value: str) -> str:
    value = shown(value)
    if "/" in value.rstrip("/"):
        value = value.rstrip("/").rsplit("/", 1)[-1]  # a path: its last component
    return re.sub(r"[^\w.+\-~@%]+", "_", value, flags=re.ASCII).strip("_") or "_"


def job_name(values: dict[str, str]) -> str:
    """`lr=0.05,seed=1`: a folder name (no slash, ASCII, at most MAX_NAME characters)."""
    names = short_names(list(values))
    name = ",".join(f"{_readable(names[k])}={_readable(v)}" for k, v in values.items())
    if len(name) > MAX_NAME:  # a name over 255 bytes is refused; the digest keeps cut ones apart
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}~{digest}"
    return name


def width_used(sweep_dir: Path) -> int | None:
    """The width the job numbers of `sweep_dir`'s job folders were written with (None for no
    job): a sweep run again keeps its folder names when it grows (an Optuna search past 10
    trials, whose 11 would otherwise be numbered 00 to 10, and every trial run again)."""
    found = [re.match(r"\d+(?=_|$)", d.parent.name) for d in sweep_dir.glob("*/.hydra")]
    return min((len(m[0]) for m in found if m), default=None)


def job_num(config: DictConfig) -> int:
    return int(OmegaConf.select(config, "hydra.job.num", default=0) or 0)


DEFAULT_SUBDIR = "${sweep_subdir:}"  # hydra.sweep.subdir of conf/hydra/default.yaml


def sweep_subdir(*, _root_: DictConfig) -> str:
    """`hydra.sweep.subdir`: `<job number>_<swept key=value,...>`, or the number alone."""
    num = job_num(_root_)
    plan = current or Plan()
    width = plan.width or (len(str(plan.jobs - 1)) if plan.jobs else 1)
    overrides = OmegaConf.select(_root_, "hydra.overrides.task", default=None) or []
    name = job_name(swept_values(overrides, plan.keys))
    return f"{num:0{width}d}_{name}" if name else f"{num:0{width}d}"


def register_resolvers() -> None:
    """Register `${sweep_subdir:}` (conf/hydra/default.yaml's `hydra.sweep.subdir`) with OmegaConf.

    Called by `src.cli.setup` in the process that starts a sweep, and by `SweepSummary` when a
    launcher unpickles it in a job process (joblib, submitit), where Hydra resolves the job's
    folder before any code of the job runs."""
    OmegaConf.register_new_resolver("sweep_subdir", sweep_subdir, replace=True)
