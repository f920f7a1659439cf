"""Whether a run continues the checkpoint it resumes: an optimizer state torch can take, the
same optimizer and schedule, with the same settings, and, stopped mid-epoch, the same batches
(`check_config` asks, through `rules`)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from src.checkpoint import finite, loader_position, model_settings, stored_data_settings
from src.errors import CheckpointError, ConfigError


def check_optimizer_state(ckpt: dict, path: Path) -> None:
    """CheckpointError unless the checkpoint holds one optimizer's state over its network's
    parameters, which torch restores unchecked: a rate that is no number, or a state of other
    parameters, failed at the first step or dropped the momentum without a word."""
    from src.model.module import BNStateModule

    with torch.device("meta"):
        module = BNStateModule(**model_settings(ckpt, path))
    shapes = [tuple(p.shape) for p in module.net.parameters()]
    states = ckpt["optimizer_states"]
    saved = states[0] if isinstance(states, list) and len(states) == 1 else None
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    state = saved.get("state") if isinstance(saved, dict) else None
    ok = isinstance(state, dict) and isinstance(groups, list) and groups != []
    ok = ok and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
    params = [i for g in groups for i in g["params"]] if ok else []
    ok = ok and all(type(i) is int for i in params) and sorted(params) == list(range(len(shapes)))
    for index, tensors in state.items() if ok else ():
        ok = ok and type(index) is int and 0 <= index < len(shapes) and isinstance(tensors, dict)
        for value in tensors.values() if ok else ():
            ok = ok and (value is None or torch.is_tensor(value) and _fits(value, shapes[index]))
    if not ok:
        raise CheckpointError(
            f"ckpt_path={path}: its optimizer_states are not one optimizer's state of its "
            f"network's {len(shapes)} parameters: it cannot be continued"
        )
    for name, value in ((k, v) for g in groups for k, v in g.items() if k != "params"):
        rate = name != "lr" or type(value) in (int, float) and value >= 0
        if not (_setting(value) and rate):
            raise CheckpointError(
                f"ckpt_path={path}: its optimizer_states hold {name}={value!r}, not a setting "
                "the optimizer can take: it cannot be continued"
            )


def _fits(value: torch.Tensor, shape: tuple[int, ...]) -> bool:
    """A dense, finite tensor of its parameter's shape, of it with dimensions of 1 (Adafactor's
    factors), or a scalar (a step count)."""
    same = value.dim() == len(shape) and all(n in (1, m) for n, m in zip(value.shape, shape))
    return (same or value.dim() == 0) and finite(value)


def _setting(value: Any) -> bool:
    """An optimizer's setting: a flag, a finite number, nothing, or a tuple of them (betas)."""
    if isinstance(value, (tuple, list)):
        return all(_setting(v) for v in value)
    return (
        value is None or type(value) in (bool, int) or type(value) is float and math.isfinite(value)
    )


def check_optimizer_matches(ckpt: dict, cfg: Any, path: Path) -> None:
    """CheckpointError unless a resumed run has the optimizer and learning-rate schedule whose
    state its checkpoint holds, with the same settings. Lightning restores that state into this
    run's: another class fails at the first step (a KeyError, after the run folder exists), and
    another setting (optimizer.lr) would be replaced by the checkpoint's without a word. Checked
    where the checkpoint records its run's config (`src.train` writes it)."""
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or not isinstance(stored.get("optimizer"), dict):
        return
    for key, what in (("optimizer", "optimizer"), ("scheduler.scheduler", "schedule")):
        saved: Any = stored
        for part in key.split("."):
            saved = saved.get(part) if isinstance(saved, dict) else None
        saved = saved if isinstance(saved, dict) else {}
        node = OmegaConf.select(cfg, key, default=None)
        given = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        was, now = saved.get("_target_"), given.get("_target_")
        if was != now and not (was and now and _same_object(str(was), str(now))):
            group = key.split(".")[0]
            same = f"{key}._target_={was} (or the {group} group it came from)"
            if not was:
                same = f"{group}=none"
            raise CheckpointError(
                f"ckpt_path={path}: its {what} is {was or 'none'}, but this run's is "
                f"{now or 'none'}; a resumed run continues the state of the checkpoint's {what}, "
                f"so resume with {same}"
            )
        for name in sorted(saved.keys() & given.keys() - {"_target_", "_partial_"}):
            if saved[name] != given[name]:
                # T_max=${trainer.max_epochs}: that key changed, and it is what to set back
                source = _source(cfg, f"{key}.{name}")
                sized = f" (${{{source}}}: a schedule sized by the run cannot be extended)"
                raise CheckpointError(
                    f"ckpt_path={path}: was trained with {key}.{name}={saved[name]}, but this run "
                    f"has {key}.{name}={given[name]}{sized if source != f'{key}.{name}' else ''}; "
                    f"resuming restores the checkpoint's {what}, its settings too, so set "
                    f"{source}={saved[name]}"
                )
    # A schedule over the whole run (OneCycleLR's total_steps=null) was sized by its length: the
    # restored one cannot step past it.
    schedule = stored.get("scheduler")
    schedule = schedule.get("scheduler") if isinstance(schedule, dict) else None
    if isinstance(schedule, dict) and "total_steps" in schedule and schedule["total_steps"] is None:
        trained = stored.get("trainer") if isinstance(stored.get("trainer"), dict) else {}
        for name in ("max_epochs", "max_steps", "limit_train_batches"):
            was, now = trained.get(name), OmegaConf.select(cfg, f"trainer.{name}", default=None)
            if was != now:
                raise CheckpointError(
                    f"ckpt_path={path}: was trained with trainer.{name}={was}, the run its "
                    f"schedule spans (scheduler.scheduler.total_steps=null), but this run has "
                    f"trainer.{name}={now}; resuming restores that schedule, which cannot step "
                    f"past its end, so set trainer.{name}={was}"
                )


# Data settings that change neither the training images nor their order: this machine's own,
# where the same images are (a path: the same files may have moved, or a relative path been
# written absolute; what they hold is checked once read, by the data loader's own position), and
# the test set's.
DATA_FREE = {"cache_dir", "on_device", "test_batch_size", "num_test_per_class", "download",
             "mirrors", "root", "train_file", "test_file"}  # fmt: skip


def check_position_matches(ckpt: dict, cfg: Any, path: Path, processes: int) -> None:
    """ConfigError unless a resumed run is not past its end already (more epochs trained than
    `trainer.max_epochs`, or iterations than `trainer.max_steps`), and, resumed in the middle
    of an epoch, continues that epoch's batches: the same training images, cut the same way,
    dealt to as many processes. (At an epoch boundary the next epoch may be cut otherwise.)"""
    done: Any = ckpt.get("loops")
    for key in ("fit_loop", "epoch_progress", "current", "processed"):  # epochs trained
        done = done.get(key) if isinstance(done, dict) else None
    last = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if isinstance(done, int) and isinstance(last, int) and 0 <= last < done:
        raise ConfigError(
            f"trainer.max_epochs={last}: ckpt_path={path} has trained {done} epochs already, "
            f"and a resumed run cannot train fewer: set trainer.max_epochs={done} or more, or "
            f"test it as it is (python -m src.evaluate ckpt_path={path})"
        )
    steps = ckpt.get("global_step")
    most = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if isinstance(steps, int) and isinstance(most, int) and 0 <= most < steps:
        raise ConfigError(
            f"trainer.max_steps={most}: ckpt_path={path} has trained {steps} iterations already, "
            f"and a resumed run cannot train fewer: give it {steps} or more (-1: no limit), or "
            f"test it as it is (python -m src.evaluate ckpt_path={path})"
        )
    position = loader_position(ckpt, path)
    if not position:
        return
    saved = position.get("world_size", 1)
    if (
        not 0
        < position["batches_done"]
        < position["num_samples"] // (position["batch_size"] * saved)
    ):
        return
    cut = f"ckpt_path={path} stopped in the middle of epoch {position['epoch'] + 1}"
    data = stored_data_settings(ckpt, path) or {}
    stored = {f"data.{k}": v for k, v in data.items() if k not in DATA_FREE}
    stored |= {"data.batch_size": position["batch_size"], "data.shuffle_seed": position["seed"]}
    for key, was in stored.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value != was:
            raise ConfigError(
                f"{key}={value}: {cut}, whose batches were cut with {key}={was}; resume with "
                f"{_source(cfg, key)}={was} (or from an end-of-epoch checkpoint)"
            )
    if saved != processes:
        how = "trainer=cpu or trainer=gpu" if saved == 1 else "trainer=ddp_cpu or trainer=ddp"
        raise ConfigError(
            f"trainer.devices={OmegaConf.select(cfg, 'trainer.devices')}: {cut}, whose batches "
            f"were dealt to {saved} process(es); resume with {saved} ({how}; or from an "
            "end-of-epoch checkpoint)"
        )


def _source(cfg: Any, key: str) -> str:
    """The key a setting's value comes from: `seed` for data.shuffle_seed=${seed}, else `key`."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None)
    if isinstance(node, DictConfig) and name in node and OmegaConf.is_interpolation(node, name):
        typed = OmegaConf.to_container(node, resolve=False)[name]
        if found := re.fullmatch(r"\$\{([\w.]+)\}", str(typed)):
            return found[1]
    return key


def _same_object(a: str, b: str) -> bool:
    """Whether two dotted names import the same class (torch.optim.SGD, torch.optim.sgd.SGD)."""
    import hydra

    try:
        return hydra.utils.get_object(a) is hydra.utils.get_object(b)
    except Exception:  # a name that no longer imports is another class
        return False
