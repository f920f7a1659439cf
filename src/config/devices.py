"""The accelerator, devices and strategy a run asks for, and the number of processes that makes:
one, or several under DDP; each refusal a `ConfigError` naming the key."""

from __future__ import annotations

import torch
from lightning.fabric.accelerators.cpu import CPUAccelerator
from lightning.fabric.accelerators.cuda import CUDAAccelerator
from lightning.pytorch.accelerators import AcceleratorRegistry
from omegaconf import DictConfig, OmegaConf

from src.config.schema import require, value_at
from src.errors import ConfigError, first_line


def check_accelerator(cfg: DictConfig) -> int:
    """The accelerator, devices and strategy: the number of processes the run starts."""
    given = value_at(cfg, "trainer.accelerator")
    names = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))  # Lightning's
    if isinstance(given, str) and given not in names:
        raise ConfigError(f"trainer.accelerator={given!r} must be one of: {', '.join(names)}")
    accelerator = str(given or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: PyTorch sees no "
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


def device_count(cfg: DictConfig, accelerator: str) -> int:
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
    processes = device_count(cfg, accelerator) * nodes
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
    if processes > 1 and value_at(cfg, "trainer.use_distributed_sampler") is not False:
        raise ConfigError(
            "trainer.use_distributed_sampler must be false with several processes: the data "
            "module deals each process its shard of the epoch itself"
        )
    return processes
