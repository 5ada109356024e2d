"""Optimizers and learning-rate schedules for the trainer.

Schedules are per-iteration multipliers (linear warmup, then cosine, step or one-cycle) in a
`LambdaLR`, so they resume exactly from the scheduler's state_dict and are easy to test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from visiontool.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "onecycle", "constant")


def build_optimizer(groups: list[dict[str, Any]], *, name: str, lr: float, momentum: float) -> Any:
    import torch

    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def lr_multiplier(
    schedule: str, *, total: int, warmup: int, final: float = 0.01
) -> Callable[[int], float]:
    """Multiplier of the base lr at iteration `i` (0-based) of `total` iterations.

    Warmup ramps linearly from 0.1% to 100% over `warmup` iterations; then cosine decays to
    `final`, step divides by 10 at 2/3 and 8/9 of training, one-cycle rises to the peak by 30%
    and anneals to `final` (its own warmup), constant stays at 1.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    total = max(1, total)
    warmup = max(0, min(warmup, total - 1)) if schedule != "onecycle" else 0

    def multiplier(i: int) -> float:
        if i < warmup:
            return 0.001 + (1 - 0.001) * i / warmup
        progress = (i - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if schedule == "step":
            return 1.0 if progress < 2 / 3 else (0.1 if progress < 8 / 9 else 0.01)
        if schedule == "onecycle":
            peak = 0.3
            if progress < peak:
                return 0.04 + (1 - 0.04) * progress / peak
            tail = (progress - peak) / (1 - peak)
            return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, tail)))
        return 1.0

    return multiplier


def build_scheduler(optimizer: Any, schedule: str, *, total: int, warmup: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(schedule, total=total, warmup=warmup)
    )


def ema_model(model: Any, decay: float) -> Any:
    """An exponential moving average of `model`'s parameters and buffers."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
