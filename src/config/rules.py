"""The checks of a whole composed config: each group's values (`schema`), its classes
(`targets`), the devices and processes (`devices`), and the rules that tie groups together (the
built-in data's batches, the CUDA graph mode, resuming a checkpoint), each a `ConfigError`
naming the key."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.checkpoint import check_network_matches, read_checkpoint
from src.config.continuation import (
    check_optimizer_matches,
    check_optimizer_state,
    check_position_matches,
)
from src.config.devices import ONE_PROCESS_STRATEGIES, check_accelerator
from src.config.schema import (
    ABSENT,
    check_data_memory,
    check_data_paths,
    check_data_settings,
    check_group_values,
    check_model_settings,
    leaves,
    number_at,
    require,
    require_bool,
    require_type,
    value_at,
    written,
)
from src.config.targets import (
    check_added_keys,
    check_builds,
    check_group_entries,
    check_refused,
    check_targets,
)
from src.data.arrays import (
    NUM_CLASSES,
    batch_problem,
    held_out,
    limit_problem,
    num_batches,
    overfit_problem,
    split_problem,
)
from src.errors import ConfigError, first_line
from src.model.precision import canonical, precision_problem

# Stands in for Hydra's runtime.output_dir, which only exists once Hydra has made the run folder.
_PLACEHOLDER_OUTPUT_DIR = "<run folder>"


# The configs (and run modes) already checked in this command: `src.cli.run` sets it, so its
# job does not redo what the command line passed. None: check every time (train(cfg) in a test).
checked: set[str] | None = None


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings.pop("hydra", None)
    key = repr((settings, in_multirun(cfg)))  # DDP is refused in a multirun
    if checked is None or key not in checked:
        _check_all(cfg, settings)
    if checked is not None:
        checked.add(key)


def refuse_tilde(key: str, value: Any) -> None:
    """A path that starts with `~` (Hydra takes it quoted only) where nothing expands it: Hydra
    would make a folder named `~` in the current one."""
    if not isinstance(value, str) or not value.startswith("~"):
        return
    if value == "~" or value.startswith("~/"):
        hint = f"write $HOME{value[1:]}"
    else:  # ~user/...: the user's home, where there is one
        home = os.path.expanduser(value)
        hint = f"write {home}" if home != value else "write the whole path"
    raise ConfigError(
        f"{key}={written(value)}: ~ is not expanded here (it would name a folder called "
        f"{value.split('/')[0]}): {hint}"
    )


def in_multirun(cfg: DictConfig | None = None) -> bool:
    """Whether this is a job of a Hydra multirun; before Hydra runs it, whether `cfg` is one of
    a multirun's compositions (its `hydra.mode`, as `src.config.compose.preflight` sets it)."""
    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    if mode is None and cfg is not None:
        mode = OmegaConf.select(cfg, "hydra.mode", default=None)
    return str(mode).endswith("MULTIRUN")


def _check_all(cfg: DictConfig, settings: dict) -> None:
    """Every check of `check_config`, in order."""
    unset = [key for key, value in leaves(settings) if value == "???"]  # Hydra's mandatory
    if unset:
        raise ConfigError(f"{unset[0]} must be set: add {unset[0]}=... to the command line")
    # First: every check below reads resolved values, and an unresolvable one would be a traceback.
    _check_resolvable(cfg, settings)
    check_added_keys(cfg, settings)
    _check_run_folder(cfg)
    for key in ("ckpt_path", "paths.cache_dir", "data.cache_dir"):  # '' is the current folder
        if isinstance(value := value_at(cfg, key), str) and not value.strip():
            raise ConfigError(f"{key}={written(value)} is empty: give it a path")
        refuse_tilde(key, value)
    typed = check_targets(cfg, settings)
    check_group_entries(settings)
    require_bool(cfg, "test")
    require_bool(cfg, "train")
    require_bool(cfg, "sweep.rerun_failed")
    require_type(cfg, "task_name", str)  # the folder outputs/<task_name>/ is named by it
    require_type(cfg, "optimized_metric", str | None)
    _check_train_or_test(cfg)
    _check_scheduler(cfg)
    _check_monitors(cfg)
    check_model_settings(cfg)
    check_data_settings(cfg)
    check_group_values(cfg)
    require(cfg, "seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)", integer=True)
    require(cfg, "num_threads", lambda v: v >= 1, "at least 1 (null: automatic)", True)
    require(cfg, "optimizer.lr", lambda v: v >= 0, "0 or more")
    require(cfg, "optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)")
    require(cfg, "optimizer.weight_decay", lambda v: v >= 0, "0 or more")
    require(cfg, "trainer.max_epochs", lambda v: v >= 1, "at least 1", integer=True)
    # 0 trained nothing and tested the untrained network without a word
    require(cfg, "trainer.max_steps", lambda v: v == -1 or v >= 1, "at least 1 (-1: none)", True)
    require(cfg, "trainer.log_every_n_steps", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "callbacks.bn_state_monitor.check_after", lambda v: v >= 1, "at least 1", True)
    _check_batch_limits(cfg)
    # trainer.precision: one Lightning takes that keeps the batch-norm state float32
    if problem := precision_problem(OmegaConf.select(cfg, "trainer.precision", default=None)):
        raise ConfigError(problem)
    check_data_memory(cfg)
    processes = check_accelerator(cfg)
    # Lightning's `ddp` launcher re-runs the command line in each child process; inside a Hydra
    # multirun that command is the whole sweep.
    if processes > 1 and in_multirun(cfg):
        raise ConfigError(
            "trainer.strategy=ddp cannot run inside a Hydra multirun (each process Lightning "
            "launches would re-run the whole sweep): run each configuration as its own run"
        )
    _check_built_in_batch(cfg, processes)
    _check_checkpoint(cfg, processes)
    _check_cuda_graph(cfg)
    for key, kind in typed:  # what no check above words more closely
        require_type(cfg, key, kind)
    check_refused(cfg)  # once typed
    check_builds(cfg)
    _check_switched_off(cfg)
    check_data_paths(cfg)


def _check_built_in_batch(cfg: DictConfig, processes: int = 1) -> None:
    """data=synthetic's images are counted by its settings: a mini-batch (one a process) larger
    than all of them, or than what the validation split leaves, and a fraction of a split's
    batches that leaves none (`debug=limit`'s `trainer.limit_train_batches=0.1`), are refused
    now, before any run folder, in the data module's and `check_batches`' words (other sources
    count them when read). Training's only where the run trains (not train=false, nor the
    commands that read a checkpoint)."""
    batch, per_class = value_at(cfg, "data.batch_size"), value_at(cfg, "data.num_train_per_class")
    if value_at(cfg, "data.source") != "synthetic" or not batch or not per_class:
        return
    training, images = value_at(cfg, "train") not in (False, None), per_class * NUM_CLASSES
    test_batch, batches = value_at(cfg, "data.test_batch_size") or batch, {}
    problems = [batch_problem(batch, images, "synthetic", processes) if training else None]
    if fraction := value_at(cfg, "data.val_fraction") or 0:
        counts = dict.fromkeys(range(NUM_CLASSES), per_class)
        problems.append(split_problem(counts, fraction, batch, "synthetic", training))
        images -= NUM_CLASSES * held_out(per_class, fraction)
        if training and processes > 1:
            problems.append(batch_problem(batch, images, "synthetic", processes))
    overfit = value_at(cfg, "data.overfit_batches") or 0
    if training:
        problems.append(overfit_problem(overfit, batch, images, "synthetic"))
        batches["train"] = num_batches(images, batch, processes, True, overfit)
        if fraction:
            batches["val"] = num_batches(NUM_CLASSES * held_out(per_class, fraction), test_batch)
    if value_at(cfg, "test"):
        tested = (value_at(cfg, "data.num_test_per_class") or 0) * NUM_CLASSES
        batches["test"] = num_batches(tested, test_batch, processes)
    for split, n in batches.items():
        problems.append(limit_problem(split, value_at(cfg, f"trainer.limit_{split}_batches"), n))
    if problem := next((p for p in problems if p), None):
        raise ConfigError(problem)


def _check_switched_off(cfg: DictConfig) -> None:
    """A part of the run the trainer is told to leave out while a callback still makes it."""
    for flag, callback in (
        ("enable_checkpointing", "model_checkpoint"),
        ("enable_progress_bar", "progress_bar"),
    ):
        if value_at(cfg, f"trainer.{flag}") is False and value_at(cfg, f"callbacks.{callback}"):
            raise ConfigError(
                f"trainer.{flag}=false while callbacks.{callback} is on: switch that off too with "
                f"~callbacks.{callback}"
            )


def _check_scheduler(cfg: DictConfig) -> None:
    """The scheduler group's own keys: when it steps, and the metric ReduceLROnPlateau steps on
    (Lightning's `monitor`); no other key of Lightning's scheduler dict is read here."""
    node = OmegaConf.select(cfg, "scheduler", default=None)
    if not isinstance(node, DictConfig):
        return
    extra = sorted(set(node) - {"interval", "scheduler", "monitor"})
    if extra:
        raise ConfigError(f"scheduler.{extra[0]}: the scheduler group takes interval, scheduler "
                          "and monitor (the metric ReduceLROnPlateau steps on)")  # fmt: skip
    interval = value_at(cfg, "scheduler.interval")
    if interval is not None and interval not in ("step", "epoch"):
        raise ConfigError(
            f"scheduler.interval={written(interval)} must be 'step' (after every iteration) or "
            "'epoch'"
        )
    target = str(OmegaConf.select(cfg, "scheduler.scheduler._target_", default=""))
    if target.endswith("ReduceLROnPlateau") and (interval != "epoch" or not node.get("monitor")):
        raise ConfigError(f"scheduler.scheduler._target_={target} steps on a metric after each "
                          "epoch: set scheduler.interval=epoch and scheduler.monitor (e.g. "
                          "val/loss, with data.val_fraction above 0)")  # fmt: skip


def _check_monitors(cfg: DictConfig) -> None:
    """A callback or schedule that watches a metric (EarlyStopping on val/acc) watches one the
    module logs while training, the way it improves, and has the validation split it comes from."""
    from src.model.module import VALIDATION_METRICS

    fraction = value_at(cfg, "data.val_fraction") or 0
    watching = [(f"callbacks.{name}", node, node) for name, node in
                (OmegaConf.select(cfg, "callbacks", default=None) or {}).items()]  # fmt: skip
    schedule = OmegaConf.select(cfg, "scheduler", default=None)
    if isinstance(schedule, DictConfig):  # ReduceLROnPlateau's mode is its own argument
        watching.append(("scheduler", schedule, schedule.get("scheduler") or {}))
    for name, node, moded in watching:
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if not isinstance(monitor, str):
            continue  # null: watches nothing; another type: its class's signature refuses it
        if monitor not in VALIDATION_METRICS:
            raise ConfigError(
                f"{name}.monitor={monitor} is not one of the metrics a callback or schedule can "
                f"watch (VALIDATION_METRICS, src/model/module.py): watch "
                f"{' or '.join(VALIDATION_METRICS)}"
            )
        mode, better = moded.get("mode", ABSENT), VALIDATION_METRICS[monitor]
        if mode is not ABSENT and mode != better:  # absent: the class's own default
            higher = "higher" if better == "max" else "lower"
            where = f"{name}.scheduler" if moded is not node else name
            raise ConfigError(
                f"{where}.mode={mode!r} must be {better}: {monitor} is better {higher}"
            )
        if not fraction:
            raise ConfigError(
                f"{name} monitors {monitor}, which needs a validation split, but "
                f"data.val_fraction={fraction}: set it above 0 (e.g. data.val_fraction=0.1)"
            )
        if value_at(cfg, "trainer.limit_val_batches") == 0:  # no validation, so never a check
            raise ConfigError(f"{name} monitors {monitor}, but "
                              "trainer.limit_val_batches=0 runs no validation")  # fmt: skip


def _check_cuda_graph(cfg: DictConfig) -> None:
    """`model.cuda_graph=true` replays one captured training step on one GPU; refuse what it
    cannot honour, in one line, rather than fall back silently."""
    if not value_at(cfg, "model.cuda_graph"):
        return
    accelerator = str(value_at(cfg, "trainer.accelerator") or "auto").lower()
    problem = None
    if not torch.cuda.is_available():
        problem = (
            f"PyTorch sees no CUDA GPU on this machine (torch {torch.__version__}); CUDA graphs "
            "capture GPU work only: drop model.cuda_graph=true to train on the CPU"
        )
    elif accelerator not in ("gpu", "cuda", "auto"):  # auto: the GPU, which torch sees
        problem = f"trainer.accelerator={accelerator} runs on the CPU: use trainer=gpu"
    elif value_at(cfg, "trainer.strategy") not in (None, *ONE_PROCESS_STRATEGIES):
        problem = "it captures one process's step: use trainer=gpu (one GPU), not DDP"
    elif value_at(cfg, "model.sync_batchnorm"):
        problem = "model.sync_batchnorm=true needs collectives the graph cannot hold: set it false"
    elif value_at(cfg, "data.on_device") is False:
        problem = "the graph indexes data resident on the GPU: set data.on_device=auto or true"
    elif canonical(OmegaConf.select(cfg, "trainer.precision", default=None)) == "16-mixed":
        problem = (
            "trainer.precision=16-mixed scales the loss with a GradScaler, whose overflow check "
            "reads a value back to the host at every step and cannot be captured: use bf16-mixed"
        )
    else:
        scheduler = OmegaConf.select(cfg, "scheduler.scheduler", default=None)
        if scheduler:
            problem = (
                "a learning-rate schedule changes the rate the graph captured as a constant: "
                "use scheduler=none"
            )
    if problem:
        raise ConfigError(f"model.cuda_graph=true: {problem}")


def _check_train_or_test(cfg: DictConfig) -> None:
    """train=false tests the network of a checkpoint: it needs one, and testing."""
    if value_at(cfg, "train") is not False:
        return
    if value_at(cfg, "ckpt_path") is None:
        raise ConfigError(
            "train=false needs ckpt_path=PATH: the checkpoint whose network is tested instead "
            "of training one"
        )
    if value_at(cfg, "test") is False:
        raise ConfigError("train=false with test=false would do nothing: set test=true")


def _check_checkpoint(cfg: DictConfig, processes: int) -> None:
    """A `ckpt_path` to resume from must be a sound checkpoint this run can continue: the same
    network, and inside an epoch the same batches dealt to as many processes."""
    path = value_at(cfg, "ckpt_path")
    if path is None:
        return
    ckpt = read_checkpoint(Path(str(path)))  # CheckpointError: one line naming the fault
    check_network_matches(ckpt, cfg.get("model"), Path(str(path)))
    # train=false, src.evaluate, src.predict, src.export (no `train` key): read, not resumed
    if value_at(cfg, "train") not in (False, None):
        check_optimizer_state(ckpt, Path(str(path)))
        check_optimizer_matches(ckpt, cfg, Path(str(path)))
        check_position_matches(ckpt, cfg, Path(str(path)), processes)


@contextlib.contextmanager
def hydra_runtime(cfg: DictConfig, output_dir: str | None = None) -> Iterator[None]:
    """Let `${hydra:...}` resolve before Hydra has set its runtime config (at preflight), with
    `output_dir` for the run folder where it is known (then over the config of an earlier run
    in this process too: a notebook's, a test's)."""
    if "hydra" not in cfg or (output_dir is None and HydraConfig.initialized()):
        yield  # inside a run: the real runtime config answers
        return
    probe = copy.deepcopy(cfg)
    with open_dict(probe), read_write(probe):
        probe.hydra.runtime.output_dir = output_dir or _PLACEHOLDER_OUTPUT_DIR
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(probe)
    try:
        yield
    finally:
        instance.cfg = previous


def _check_resolvable(cfg: DictConfig, settings: dict) -> None:
    """Every interpolation outside the `hydra` node resolves (unknown keys, resolvers, env vars)."""
    with hydra_runtime(cfg):
        for key, raw in leaves(settings):
            if not (isinstance(raw, str) and "${" in raw):
                continue
            try:
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
            except Exception as err:  # resolvers raise anything; OmegaConf wraps most of it
                raise ConfigError(f"{key}={raw}: cannot be resolved ({first_line(err)})") from err


def _check_run_folder(cfg: DictConfig) -> None:
    """A run writes all it makes into the one folder Hydra names: another paths.output_dir or
    trainer.default_root_dir would put some of it (figures, checkpoints) apart from the rest."""
    with hydra_runtime(cfg):
        if not HydraConfig.initialized():
            return
        if HydraConfig.get().job.chdir:  # the data's, the cache's, a ckpt_path's relative paths
            raise ConfigError(
                "hydra.job.chdir=true: the paths a run is given (data, ckpt_path, the cache) are "
                "read from where the command runs, and its outputs go to its run folder anyway: "
                "leave it false"
            )
        run = HydraConfig.get().runtime.output_dir
        for key in ("paths.output_dir", "trainer.default_root_dir"):
            value = OmegaConf.select(cfg, key, default=None)
            if value is not None and str(value) != str(run):
                raise ConfigError(
                    f"{key}={value}: a run writes everything into its run folder, which Hydra "
                    f"names: set hydra.run.dir={value} (a sweep: hydra.sweep.dir) instead"
                )


def _check_batch_limits(cfg: DictConfig) -> None:
    """Lightning's limit_*_batches: null, a count or a fraction, and never zero where used."""
    testing = value_at(cfg, "test") is not False  # src.evaluate has no `test`: testing is its task
    for split, used in (("train", True), ("test", testing)):
        key = f"trainer.limit_{split}_batches"
        value = number_at(cfg, key)
        if value is None:
            continue
        if value < 0 or (isinstance(value, float) and value > 1):
            raise ConfigError(
                f"{key}={value!r} is out of range: it must be null (all batches), a whole number "
                "of batches, or a fraction in [0.0, 1.0]"
            )
        if value == 0 and split == "train":
            raise ConfigError(
                f"{key}={value!r} leaves no training batches: use null (all), a number of "
                "batches, or a fraction above 0"
            )
        if value == 0 and used:
            said = "while test=true: use test=false to skip testing"
            if "test" not in cfg:  # src.evaluate
                said = "to test the checkpoint on: use null (all), a number or a fraction above 0"
            raise ConfigError(f"{key}={value!r} leaves no test batches {said}")
