"""The checks of a whole composed config: each group's values (`schema`), its classes
(`targets`), and the rules that tie groups together (devices and processes, the CUDA graph mode,
resuming a checkpoint, memory), each a `ConfigError` naming the key."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.accelerators.cpu import CPUAccelerator
from lightning.fabric.accelerators.cuda import CUDAAccelerator
from lightning.pytorch.accelerators import AcceleratorRegistry
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.checkpoint import (
    check_network_matches,
    check_optimizer_matches,
    check_position_matches,
    read_checkpoint,
)
from src.config.schema import (
    ABSENT,
    check_built_in_batch,
    check_data_memory,
    check_data_paths,
    check_data_settings,
    check_group_values,
    check_model_settings,
    check_trainer_refusals,
    leaves,
    number_at,
    require,
    require_bool,
    require_type,
    value_at,
)
from src.config.targets import check_builds, check_group_entries, check_targets
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
    # A multirun's job checks again: only it knows it is one (DDP is refused there).
    key = repr((settings, in_multirun()))
    if checked is None or key not in checked:
        _check_all(cfg, settings)
    if checked is not None:
        checked.add(key)


def in_multirun() -> bool:
    """Whether this is a job of a Hydra multirun."""
    return HydraConfig.initialized() and str(HydraConfig.get().mode).endswith("MULTIRUN")


def _check_all(cfg: DictConfig, settings: dict) -> None:
    """Every check of `check_config`, in order."""
    unset = [key for key, value in leaves(settings) if value == "???"]  # Hydra's mandatory
    if unset:
        raise ConfigError(f"{unset[0]} must be set: add {unset[0]}=... to the command line")
    # First: every check below reads resolved values, and an unresolvable one would be a traceback.
    _check_resolvable(cfg, settings)
    _check_run_folder(cfg)
    typed = check_targets(cfg, settings)
    check_group_entries(settings)
    require_bool(cfg, "test")
    require_bool(cfg, "train")
    require_bool(cfg, "sweep.rerun_failed")
    require_type(cfg, "task_name", str)  # the folder outputs/<task_name>/ is named by it
    require_type(cfg, "optimized_metric", str | None)
    _check_train_or_test(cfg)
    interval = value_at(cfg, "scheduler.interval")
    if interval is not None and interval not in ("step", "epoch"):
        raise ConfigError(
            f"scheduler.interval={interval!r} must be 'step' (after every iteration) or 'epoch'"
        )
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
    require(cfg, "trainer.log_every_n_steps", lambda v: v >= 1, "at least 1", integer=True)
    require(cfg, "callbacks.bn_state_monitor.check_after", lambda v: v >= 1, "at least 1", True)
    _check_batch_limits(cfg)
    _check_precision(cfg)
    check_data_memory(cfg)
    processes = _check_accelerator(cfg)
    check_built_in_batch(cfg, processes)
    _check_checkpoint(cfg, processes)
    _check_cuda_graph(cfg)
    for key, kind in typed:  # what no check above words more closely
        require_type(cfg, key, kind)
    check_trainer_refusals(cfg)  # once typed
    check_builds(cfg)
    _check_switched_off(cfg)
    check_data_paths(cfg)


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


def _check_monitors(cfg: DictConfig) -> None:
    """A callback that watches a metric (EarlyStopping on val/acc) watches one the run logs
    while training, the way it improves, and has the validation split it comes from."""
    from src.model.module import VALIDATION_METRICS

    fraction = value_at(cfg, "data.val_fraction") or 0
    for name, node in (OmegaConf.select(cfg, "callbacks", default=None) or {}).items():
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if not isinstance(monitor, str):
            continue  # null: watches nothing; another type: its class's signature refuses it
        if monitor not in VALIDATION_METRICS:
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor} is not logged while training: watch "
                f"{' or '.join(VALIDATION_METRICS)}"
            )
        mode, better = node.get("mode", ABSENT), VALIDATION_METRICS[monitor]
        if mode is not ABSENT and mode != better:  # absent: the class's own default
            higher = "higher" if better == "max" else "lower"
            raise ConfigError(
                f"callbacks.{name}.mode={mode!r} must be {better}: {monitor} is better {higher}"
            )
        if not fraction:
            raise ConfigError(
                f"callbacks.{name} monitors {monitor}, which needs a validation split, but "
                f"data.val_fraction={fraction}: set it above 0 (e.g. data.val_fraction=0.1)"
            )
        if value_at(cfg, "trainer.limit_val_batches") == 0:  # no validation, so never a check
            raise ConfigError(f"callbacks.{name} monitors {monitor}, but "
                              "trainer.limit_val_batches=0 runs no validation")  # fmt: skip


def _check_cuda_graph(cfg: DictConfig) -> None:
    """`model.cuda_graph=true` replays one captured training step on one GPU; refuse what it
    cannot honour, in one line, rather than fall back silently."""
    if not value_at(cfg, "model.cuda_graph"):
        return
    accelerator = str(value_at(cfg, "trainer.accelerator") or "auto").lower()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    problem = None
    if not torch.cuda.is_available():
        problem = (
            f"PyTorch sees no CUDA GPU on this machine (torch {torch.__version__}); CUDA graphs "
            "capture GPU work only: drop model.cuda_graph=true to train on the CPU"
        )
    elif not on_gpu:
        problem = f"trainer.accelerator={accelerator} runs on the CPU: use trainer=gpu"
    elif _device_count(cfg, accelerator) != 1 or value_at(cfg, "trainer.strategy") not in (
        None,
        *ONE_PROCESS_STRATEGIES,
    ):
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


def _check_precision(cfg: DictConfig) -> None:
    """`trainer.precision`: one Lightning takes that keeps the batch-norm state float32."""
    problem = precision_problem(OmegaConf.select(cfg, "trainer.precision", default=None))
    if problem:
        raise ConfigError(problem)


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
        check_optimizer_matches(ckpt, cfg, Path(str(path)))
        check_position_matches(ckpt, cfg, Path(str(path)), processes)


@contextlib.contextmanager
def _hydra_runtime(cfg: DictConfig) -> Iterator[None]:
    """Let `${hydra:...}` resolve before Hydra has set its runtime config (at preflight)."""
    if HydraConfig.initialized() or "hydra" not in cfg:
        yield  # inside a run: the real runtime config answers
        return
    probe = copy.deepcopy(cfg)
    with open_dict(probe), read_write(probe):
        probe.hydra.runtime.output_dir = _PLACEHOLDER_OUTPUT_DIR
    instance = HydraConfig.instance()
    instance.set_config(probe)
    try:
        yield
    finally:
        instance.cfg = None


def _check_resolvable(cfg: DictConfig, settings: dict) -> None:
    """Every interpolation outside the `hydra` node resolves (unknown keys, resolvers, env vars)."""
    with _hydra_runtime(cfg):
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
    with _hydra_runtime(cfg):
        if not HydraConfig.initialized():
            return
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
    for split, used in (("train", True), ("test", bool(value_at(cfg, "test")))):
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
            raise ConfigError(
                f"{key}={value!r} leaves no test batches while test=true: use test=false to "
                "skip testing"
            )


def _check_accelerator(cfg: DictConfig) -> int:
    """The accelerator, devices and strategy: the number of processes the run starts."""
    given = value_at(cfg, "trainer.accelerator")
    names = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))  # Lightning's
    if isinstance(given, str) and given not in names:
        raise ConfigError(f"trainer.accelerator={given!r} must be one of: {', '.join(names)}")
    accelerator = str(given or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu or trainer=ddp) but PyTorch sees no "
            f"CUDA GPU on this machine (torch {torch.__version__}); use trainer=cpu, trainer=auto "
            "or, for several CPU processes, trainer=ddp_cpu"
        )
    registered = dict(AcceleratorRegistry).get(accelerator)  # not "auto", nor "gpu" (an alias)
    if registered and not registered["accelerator"].is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: Lightning finds no such device on this machine; "
            "use trainer=cpu or trainer=auto"
        )
    return _check_processes(cfg, accelerator)


# What `trainer.strategy` may be: one process, or DDP with one process a device launched by
# Lightning (`ddp`). The others would run differently from what this project reports: `dp`,
# `fsdp` and `deepspeed` shard or split the model; `ddp_spawn`/`ddp_fork` run training in
# processes whose state never reaches the one that writes metrics.json and handles signals.
ONE_PROCESS_STRATEGIES = ("auto", "single_device")
DDP_STRATEGY = "ddp"
_USE_DDP = "use trainer=ddp_cpu (CPU processes) or trainer=ddp (GPUs)"


def _device_count(cfg: DictConfig, accelerator: str) -> int:
    """Processes a node: what Lightning makes of `trainer.devices` for this accelerator."""
    devices = value_at(cfg, "trainer.devices")
    if devices is None:
        return 1
    if isinstance(devices, DictConfig) or isinstance(devices, bool):
        raise ConfigError(f"trainer.devices must be a number, a list or 'auto', got {devices!r}")
    if OmegaConf.is_list(devices):
        devices = list(devices)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        if devices == "auto":
            return torch.cuda.device_count()
        try:
            ids = CUDAAccelerator.parse_devices(devices)
        except Exception as err:  # Lightning's MisconfigurationException and TypeError
            raise ConfigError(f"trainer.devices={devices}: {first_line(err)}") from err
        return len(ids or [])
    if accelerator not in ("cpu", "auto"):
        return 1  # mps and others: Lightning checks them itself
    if devices == "auto":
        return 1
    try:  # Lightning's own reading: a whole number of 1 or more, or one written as a string
        return CPUAccelerator.parse_devices(devices)
    except TypeError as err:
        raise ConfigError(
            f"trainer.devices={devices}: on the CPU it is the number of processes, a whole "
            "number of 1 or more (trainer=ddp_cpu: 2)"
        ) from err


def _check_processes(cfg: DictConfig, accelerator: str) -> int:
    """Several processes only with DDP (and DDP only with several), in a single run; no setting
    of the trainer's that would silently change what the run does."""
    strategy = value_at(cfg, "trainer.strategy")
    if strategy is None:
        strategy = "auto"
    if not isinstance(strategy, str):
        raise ConfigError(
            f"trainer.strategy must be the name of a strategy (auto or ddp), got {strategy!r}"
        )
    strategy = strategy.lower()
    if strategy not in (*ONE_PROCESS_STRATEGIES, DDP_STRATEGY):
        raise ConfigError(
            f"trainer.strategy={strategy} is not supported: use trainer.strategy=auto (one "
            f"process), or for data-parallel training {_USE_DDP} (strategy ddp)"
        )
    require(cfg, "trainer.num_nodes", lambda v: v >= 1, "at least 1", integer=True)
    nodes = value_at(cfg, "trainer.num_nodes") or 1
    devices = value_at(cfg, "trainer.devices")
    processes = _device_count(cfg, accelerator) * nodes
    if processes < 1:
        raise ConfigError(f"trainer.devices={devices} selects no device on this machine")
    if strategy != DDP_STRATEGY and nodes > 1:
        raise ConfigError(
            f"trainer.num_nodes={nodes} needs trainer.strategy=ddp (got {strategy}): {_USE_DDP}"
        )
    if strategy != DDP_STRATEGY and processes > 1:
        # Each process would carry its own batch-norm state and the checkpoint hold rank 0's.
        raise ConfigError(
            f"trainer.devices={devices} starts {processes} processes, which needs "
            f"trainer.strategy=ddp (got {strategy}): {_USE_DDP}"
        )
    if strategy == DDP_STRATEGY and processes == 1:
        raise ConfigError(
            f"trainer.strategy=ddp with a single process (trainer.devices={devices}) would run "
            f"differently from a plain run for nothing: {_USE_DDP} for several processes, or "
            "set trainer.strategy=auto"
        )
    if processes == 1:
        return processes
    if value_at(cfg, "trainer.use_distributed_sampler") is not False:
        raise ConfigError(
            "trainer.use_distributed_sampler must be false with several processes: the data "
            "module deals each process its shard of the epoch itself"
        )
    # Lightning's `ddp` launcher re-runs the command line in each child process; inside a Hydra
    # multirun that command is the whole sweep.
    if in_multirun():
        raise ConfigError(
            "trainer.strategy=ddp cannot run inside a Hydra multirun (each process Lightning "
            "launches would re-run the whole sweep): run each configuration as its own run"
        )
    return processes
