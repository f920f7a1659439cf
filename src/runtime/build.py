"""What the entry points build from a config or a checkpoint: the data, the trained network, the
callbacks and loggers, and the checks a checkpoint passes before anything is built from it."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from src.checkpoint import (
    DATA_MODULE_TARGET,
    model_settings,
    read_checkpoint,
    stored_data_settings,
)
from src.config import CONFIG_DIR
from src.config.compose import parse_overrides
from src.config.continuation import DATA_FREE
from src.config.rules import check_config
from src.config.schema import check_data_paths, network_is_the_checkpoints, written
from src.data.arrays import limit_problem
from src.data.datamodule import DigitsDataModule
from src.errors import CheckpointError, ConfigError, DataError
from src.io import output_file
from src.model.module import BNStateModule
from src.model.network import DigitsNet
from src.model.precision import canonical, precision_problem
from src.model.state import describe_state, population_statistics

log = logging.getLogger(__name__)


def instantiate_group(
    group: DictConfig | None, extra: dict[type, dict[str, Any]] | None = None
) -> list[Any]:
    """Instantiate every entry of a config group that has a `_target_` (callbacks, loggers).

    `extra` maps a class to keyword arguments added for entries whose target is that class or a
    subclass of it (the resume step for TensorBoard, say)."""
    if not group:
        return []
    built = []
    for c in group.values():
        if not c or "_target_" not in c:
            continue
        target = hydra.utils.get_class(c._target_)
        kwargs = next((kw for cls, kw in (extra or {}).items() if issubclass(target, cls)), {})
        built.append(hydra.utils.instantiate(c, **kwargs))
    return built


def entry_point(
    task: Callable[[DictConfig], Any],
    config_name: str,
    check: Callable[[DictConfig], Any] | None = None,
) -> tuple[Callable[..., Any], Callable[[], None]]:
    """An entry point's `main` (Hydra's job: `task(cfg)` through `src.cli.run_job`, so a known
    failure is one line and its exit code) and `cli` (`src.cli.run`: the command line checked
    by `check`, by default `check_config`, then `main`)."""
    from src.cli import run, run_job

    def job(cfg: DictConfig) -> Any:
        return run_job(lambda: task(cfg))

    job.__wrapped__ = task  # type: ignore[attr-defined]  # Hydra names the job after task's file
    main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(job)
    return main, lambda: run(main, CONFIG_DIR, config_name, check=check)


def checked_checkpoint(cfg: DictConfig, data: DictConfig | None = None) -> dict:
    """Check the config as `check_config` does (with `data` for its data, where given), then
    read the checkpoint it names."""
    # `model` here only picks the statistics; the network is the checkpoint's to build.
    if added := next((k for k in cfg.model if k != "bn_stats"), None):  # +model.num_filters=8
        raise ConfigError(f"model.{added}: {network_is_the_checkpoints(cfg.task_name)}")
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        if data is not None:
            probe.data = data
        bn_stats = probe.model.get("bn_stats")  # null: the checkpoint's; 0 or false: refused
        probe.model = {
            **probe.model,
            "_target_": "src.model.module.BNStateModule",
            "bn_stats": "running" if bn_stats is None else bn_stats,
        }
    check_config(probe)
    if cfg.ckpt_path is None:  # null resumes nothing in training; here there is nothing to read
        raise ConfigError("ckpt_path=null: this command reads a training checkpoint: set one")
    ckpt = read_checkpoint(Path(cfg.ckpt_path))  # its model settings: checked by check_config
    # Untrusted until checked: its settings are refused now, before any run folder exists.
    stored_data_settings(ckpt, cfg.ckpt_path)
    return ckpt


def tested_as_trained(cfg: DictConfig, ckpt: dict) -> None:
    """A checkpoint is tested in the `trainer.precision` it was trained in, and with the
    statistics it predicts with (`bn_statistics.used`), unless the command line names them: its
    test accuracy is then the training run's to the last digit (a bf16 run tested in float32 was
    not; `train=false` tested a population run's network with its running state)."""
    typed = [o.key_or_group for o in command_overrides(cfg)]
    if "model.bn_stats" not in typed:
        with open_dict(cfg):  # one of BN_STATS_MODES: read_checkpoint checked it
            cfg.model.bn_stats = (ckpt.get("bn_statistics") or {}).get("used", "running")
    trainer = (ckpt.get("config") or {}).get("trainer")  # config: a dict (read_checkpoint)
    stored = trainer.get("precision") if isinstance(trainer, dict) else None
    if stored is None or "trainer.precision" in typed:
        return
    if problem := precision_problem(stored):  # checked, as any stored setting is
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: its stored {problem}")
    with open_dict(cfg):
        cfg.trainer.precision = stored


def changed_settings(ckpt: dict, cfg: Any) -> list[str]:
    """The settings a resumed run has other than those its checkpoint was trained with, among
    those no check refuses (they build the same network: `model.bn_decay`, `model.channels_last`,
    `trainer.precision`; or, at an epoch's end, other data: `seed`, `data.*`), as
    `key=now (trained with then)`."""
    stored = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    then = {f"model.{k}": v for k, v in model_settings(ckpt).items()}
    then["trainer.precision"] = (stored.get("trainer") or {}).get("precision")
    then["seed"] = stored.get("seed")
    data = stored.get("data") if isinstance(stored.get("data"), dict) else {}
    ours = data.get("_target_", DATA_MODULE_TARGET) == DATA_MODULE_TARGET  # else a fork's own
    for key, value in ((stored_data_settings(ckpt) or {}) if ours else {}).items():
        if key not in DATA_FREE:
            then[f"data.{key}"] = value
    said = []
    for key, was in then.items():
        now = OmegaConf.select(cfg, key, default=None)
        same = canonical(now) == canonical(was) if key == "trainer.precision" else now == was
        if was is not None and now is not None and not same:
            said.append(f"{key}={written(now)} (trained with {written(was)})")
    return said


def command_overrides(cfg: DictConfig) -> list[Any]:
    """The command line's overrides, parsed: the config's own `hydra` node's before the job
    (the command line's check), else the job's."""
    task = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
    return parse_overrides(HydraConfig.get().overrides.task if task is None else task)


def data_config(cfg: DictConfig, ckpt: dict) -> DictConfig:
    """The training run's data with this command line's `data.KEY` overrides on top; a data
    group named on the command line (`data=folder ...`) replaces it."""
    stored = stored_data_settings(ckpt, cfg.ckpt_path)  # checked values; CheckpointError
    overrides = command_overrides(cfg)
    if any(o.key_or_group == "data" for o in overrides):
        return cfg.data
    if stored is None:
        log.warning("The checkpoint records no data settings; testing on the configured data.")
        return cfg.data
    data = OmegaConf.create({"_target_": DATA_MODULE_TARGET, **stored})
    for o in overrides:
        if o.key_or_group.startswith("data."):
            key = o.key_or_group.removeprefix("data.")
            if o.is_delete():
                data.pop(key, None)
            else:  # the composed value: parsed, typed and checked by preflight already
                OmegaConf.update(data, key, OmegaConf.select(cfg, o.key_or_group))
    # The cache belongs to this machine: the training machine's folder may not exist here.
    data.cache_dir = cfg.paths.cache_dir
    return data


def build_model(
    ckpt: dict, path: Path, bn_stats: str | None, dm: DigitsDataModule
) -> BNStateModule:
    """The trained network, predicting with `bn_stats` (None: what the checkpoint predicts with)."""
    saved = ckpt.get("bn_statistics") or {}
    used = saved.get("used", "running")  # what the state_dict holds
    chosen = bn_stats or used
    model = BNStateModule(**{**model_settings(ckpt, path), "bn_stats": chosen})
    # The weights fit: check_config's check_network_matches compared them key for key.
    model.load_state_dict(ckpt["state_dict"])
    if chosen != used and saved.get(chosen) is not None:
        model.net.state = saved[chosen]
        source = "stored in the checkpoint's bn_statistics"
    elif computes_population(ckpt, chosen):  # trained and saved with the running estimate
        model.net.state = population_statistics(
            model.net, lambda: (x for x, _ in dm.ordered_dataloader("train"))
        )
        source = f"computed now over the {len(dm.train_set)} training images"
    else:
        source = "stored in the checkpoint's weights"
    # A network trained with model.update_state=false predicts with the state it began with.
    described = describe_state(chosen, bool(model.update_state))
    log.info("Predicting with bn_stats=%s (%s), %s.", chosen, described, source)
    return model


def read_data(datamodule: Any, stage: str, test_only: bool) -> None:
    """`datamodule.setup(stage)`, of the test set alone where `test_only` and the data module
    can (the project's takes `splits`; a fork's own reads what it reads)."""
    takes = "splits" in inspect.signature(datamodule.setup).parameters
    datamodule.setup(stage, **({"splits": ("test",)} if test_only and takes else {}))


def computes_population(ckpt: dict, bn_stats: str | None) -> bool:
    """Whether `build_model` computes population statistics over the training images: asked for,
    and neither in the checkpoint's weights nor in its `bn_statistics`."""
    saved = ckpt.get("bn_statistics") or {}
    used = saved.get("used", "running")
    return bn_stats == "population" != used and saved.get("population") is None


def check_batches(trainer: Any, datamodule: DigitsDataModule, *splits: str) -> None:
    """Each split the run goes through has a batch: a mini-batch for each process (DDP), and a
    fraction of an epoch's batches (`trainer.limit_train_batches=0.1`) not less than one. One
    line before the loop, not Lightning's error once it starts (the test's: after all the
    training), nor an epoch of no iterations."""
    for split in splits:
        n = datamodule.num_batches(split, trainer.world_size if split != "val" else 1)
        if split == "train" and (problem := datamodule.batch_problem(trainer.world_size)):
            raise ConfigError(problem)  # DDP: a mini-batch a process (one process: setup's)
        if problem := limit_problem(split, getattr(trainer, f"limit_{split}_batches"), n):
            raise ConfigError(problem)  # val: not shared among the processes


def build_datamodule(data: DictConfig) -> DigitsDataModule:
    """The project's data module from `data` settings, called directly: the settings may come
    from a checkpoint, so their `_target_` is never imported or instantiated."""
    settings = OmegaConf.to_container(data, resolve=True)
    target = settings.pop("_target_", DATA_MODULE_TARGET)
    if target != DATA_MODULE_TARGET:  # the command line's own data group names another class
        return hydra.utils.instantiate(data)
    return DigitsDataModule(**settings)


def checked_run(cfg: DictConfig, data_keys: Sequence[str] = ()) -> dict:
    """`checked_checkpoint` for a command that builds no data module or trainer:
    the same one-line refusals (unset or unresolvable keys, bad `model.bn_stats`, a missing,
    damaged or foreign checkpoint), then the checkpoint itself."""
    if "trainer" in cfg:  # +trainer=gpu, +trainer.precision=...: would be ignored
        raise ConfigError(f"trainer: {cfg.task_name} runs on the CPU and takes no trainer settings")
    data = OmegaConf.select(cfg, "data", default=None) or {}
    for key in data:
        if key not in data_keys:
            allowed = " and ".join(f"data.{k}" for k in data_keys)
            takes = f"only {allowed}" if data_keys else "no data settings"
            raise ConfigError(f"data.{key}: {cfg.task_name} takes {takes}")
    probe = copy.deepcopy(cfg)
    with open_dict(probe):
        # What check_config asks of a training config, neither of them built here: a data
        # module reading image files with these settings, and a one-process CPU trainer.
        raw = OmegaConf.to_container(data, resolve=False) if data else {}
        probe.data = {"_target_": DATA_MODULE_TARGET, "source": "folder", **raw}
        probe.trainer = {"_target_": "lightning.pytorch.Trainer", "accelerator": "cpu"}
    ckpt = checked_checkpoint(probe)
    if computes_population(ckpt, cfg.model.get("bn_stats")):  # over the training images
        try:  # the checkpoint names, which must still be there
            check_data_paths(OmegaConf.create({"data": stored_data_settings(ckpt, cfg.ckpt_path)}))
        except DataError as err:
            raise _unreadable(err) from err
    return ckpt


def _unreadable(err: DataError) -> DataError:
    return DataError(
        f"the checkpoint's data cannot be read here: {err}; model.bn_stats=population computes "
        "its statistics over the training images the checkpoint names: put them back there, or "
        "use model.bn_stats=running"
    )


class CheckpointData:
    """The data of the checkpoint's training run (its stored `data` settings), read on first use.

    Stands in for the data module `build_model` takes: it reads the training images
    only to compute population statistics the checkpoint does not hold.
    """

    def __init__(self, ckpt: dict, cache_dir: str | Path, path: str | Path = "?") -> None:
        self.ckpt = ckpt
        self.cache_dir = cache_dir
        self.path = path

    @functools.cached_property
    def module(self) -> Any:
        stored = stored_data_settings(self.ckpt, self.path)  # checked values, never code
        if stored is None:
            raise DataError("the checkpoint records no data settings: its images are unknown")
        # This machine's cache, not the training machine's.
        datamodule = DigitsDataModule(**{**stored, "cache_dir": str(self.cache_dir)})
        try:
            datamodule.setup("test")  # no training here: the set need not fill a mini-batch
        except DataError as err:  # (population statistics over it: checked before, _unreadable)
            raise DataError(f"the checkpoint's data cannot be read here: {err}") from err
        return datamodule

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # its construction failed with an AttributeError: no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def trained_network(cfg: DictConfig, ckpt: dict, data: CheckpointData | None = None) -> DigitsNet:
    """The checkpoint's network in prediction mode, with the statistics `model.bn_stats` picks
    (from `data`, the checkpoint's data where the caller reads it too)."""
    if data is None:
        data = CheckpointData(ckpt, cfg.paths.cache_dir, cfg.ckpt_path)
    model = build_model(ckpt, Path(cfg.ckpt_path), cfg.model.get("bn_stats"), data)
    return model.net.eval()


# Images a forward pass (memory, not results: every image is predicted on its own statistics).
BATCH = 1024


@torch.inference_mode()
def probabilities(net: DigitsNet, images: np.ndarray) -> np.ndarray:
    """MATLAB's `predict(dlnet, X)`: class probabilities with the stored state, N x classes."""
    x = torch.from_numpy(images)
    return torch.cat([net.predict(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]).numpy()


def save_resolved_config(cfg: DictConfig, data: Any = None) -> Path:
    """`config.yaml` in the run folder (`paths.output_dir`, made here; returned): what the run
    actually used, every value resolved (`.hydra/config.yaml` keeps the interpolations); `data`
    replaces the data group."""
    output_dir = Path(cfg.paths.output_dir)
    resolved = {k: v for k, v in cfg.items() if k != "hydra"}
    if data is not None:
        resolved["data"] = data
    with output_file(output_dir / "config.yaml", "config") as tmp:
        OmegaConf.save(OmegaConf.create(resolved), tmp, resolve=True)
    return output_dir
