"""`trainer.precision`: the arithmetic Lightning runs the training step in, and what
`experiment=fast` picks on the machine it runs on.

Mixed precision (`bf16-mixed`, `16-mixed`) is autocast: the convolutions and the fully connected
layer compute in bfloat16 (or float16), while the learnables, the mean image and the batch-norm
state stay float32 tensors, and the state is folded in float32 (`BatchNorm.forward_train` hands
`F.batch_norm` float32 copies of the state). The `-true` precisions would convert those tensors
themselves (`bf16-true`: the state in bfloat16), so they are refused.

bfloat16 pays only where the hardware computes it natively: on a CPU with `avx512_bf16` or
`amx_bf16` (oneDNN's bfloat16 kernels), on a GPU where `torch.cuda.is_bf16_supported()`.
Elsewhere it is emulated and slower than float32, so `experiment=fast` stays at float32 there
and says so in one line.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

DEFAULT = "32-true"
# Lightning's short spellings of the accepted values.
ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}
ACCEPTED = (DEFAULT, "bf16-mixed", "16-mixed")
# Lightning's values that would store the state in another type than float32.
NOT_FLOAT32_STATE = ("64-true", "64", "16-true", "bf16-true")
NATIVE_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def canonical(value: Any) -> str:
    """The precision Lightning runs for `value` (`32`, `"bf16"`, ... spelled out)."""
    text = str(value)
    return ALIASES.get(text, text)


def precision_problem(value: Any) -> str | None:
    """Why `trainer.precision=value` cannot run as this project promises; None when it can."""
    if value is None or canonical(value) in ACCEPTED:
        return None  # null: Lightning's default, 32-true
    if str(value) in NOT_FLOAT32_STATE:
        return (
            f"trainer.precision={value} would convert the network, its batch-norm state "
            "included, to that type: use 32-true, bf16-mixed or 16-mixed (the state stays float32)"
        )
    return (
        f"trainer.precision={value} must be 32-true (the example's single precision), "
        "bf16-mixed or 16-mixed"
    )


def cpu_flags() -> set[str]:
    """This CPU's features that torch finds (`torch.cpu.get_capabilities`)."""
    import torch

    return {name for name, on in torch.cpu.get_capabilities().items() if on is True}


def fast_choice(accelerator: Any = "auto") -> tuple[str, str | None]:
    """(the fastest precision at the example's accuracy on this machine, why it stays float32
    or None). `accelerator` is `trainer.accelerator`: auto takes the GPU if torch sees one."""
    import torch

    name = str(accelerator).lower()
    on_gpu = name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available())
    if on_gpu:
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", None
        return DEFAULT, (
            "experiment=fast: this GPU has no native bfloat16, so precision stays 32-true"
        )
    if any(flag in cpu_flags() for flag in NATIVE_CPU_FLAGS):
        return "bf16-mixed", None
    return DEFAULT, (
        "experiment=fast: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16), so "
        "precision stays 32-true"
    )


def fast_precision(accelerator: Any = "auto") -> str:
    """`${fast_precision:${trainer.accelerator}}`, the resolver conf/experiment/fast.yaml uses."""
    return fast_choice(accelerator)[0]


def say_fast_choice(cfg: Any) -> None:
    """The run's one line when `experiment=fast` kept float32 (its resolver says nothing: a
    config is resolved many times)."""
    from omegaconf import OmegaConf

    trainer = OmegaConf.to_container(cfg.get("trainer") or {}, resolve=False)
    if "fast_precision" not in str(trainer.get("precision", "")):
        return
    _, why = fast_choice(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if why:
        log.info(why)
