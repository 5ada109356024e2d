"""Fine-tuning helpers: backbone stages, freezing, and optimizer parameter groups.

Work on any built model: detectors expose their trunk's stages through `backbone.stages` (our
backbones) or torchvision's own layouts; classifiers through `stages` or their module names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from visiontool.errors import ConfigError
from visiontool.models.parts import matches, stages_of


def backbone_stages(model: nn.Module) -> list[tuple[str, ...]]:
    """Parameter-name prefixes of the model's backbone stages, from the input on."""
    if hasattr(model, "backbone"):
        stages = getattr(model.backbone, "stages", None)
        if stages is None:
            body = getattr(model.backbone, "body", model.backbone)
            inner = "backbone.body." if body is not model.backbone else "backbone."
            stages = [tuple(inner + p for p in s) for s in stages_of(body)]
        else:
            stages = [tuple(f"backbone.{p}" for p in s) for s in stages]
    else:
        stages = getattr(model, "stages", None) or stages_of(model)
    if not stages:
        raise ConfigError(f"cannot tell the backbone stages of a {type(model).__name__}")
    return [tuple(s) for s in stages]


def freeze_backbone_stages(model: nn.Module, n: int) -> list[str]:
    """Stop gradients in the first `n` backbone stages; return the frozen parameter names.

    BatchNorm running statistics in those stages still update in train mode unless the backbone
    uses FrozenBatchNorm2d (the default when starting from ImageNet weights).
    """
    stages = backbone_stages(model)
    if not 0 <= n <= len(stages):
        raise ConfigError(f"--freeze must be 0..{len(stages)} for this model, got {n}")
    prefixes = [p for stage in stages[:n] for p in stage]
    frozen = []
    for name, param in model.named_parameters():
        if matches(name, prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def head_param_names(model: nn.Module) -> list[str]:
    """Parameters outside the backbone trunk: what is new when only the trunk is pretrained."""
    stages = backbone_stages(model)
    trunk = [p for stage in stages for p in stage]
    return [name for name, _ in model.named_parameters() if not matches(name, trunk)]


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    new_param_names: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Optimizer groups: {decay, no decay} x {pretrained, new}, empty ones dropped.

    Norm weights and all biases (1-d parameters) get no weight decay; parameters named in (or
    under a module named in) `new_param_names` learn at `lr * head_lr_mult`. Frozen parameters
    are left out. Each group carries a `name` for logging.
    """
    new = list(new_param_names)
    buckets: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (matches(name, new), param.ndim <= 1)
        buckets.setdefault(key, []).append(param)
    groups = []
    for (is_new, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "name": f"{'new' if is_new else 'base'}_{'no_decay' if no_decay else 'decay'}",
                "params": params,
                "lr": lr * (head_lr_mult if is_new else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return groups
