"""Classifiers: adapting a network to new classes and input channels.

`replace_last_linear` gives a classifier a fresh class layer (the fine-tuning recipe) and
`replace_first_conv` adapts its first convolution to another number of input channels
(grayscale data on an RGB network: the pretrained filters are averaged).
"""

from __future__ import annotations

from torch import nn


def replace_last_linear(model: nn.Module, num_classes: int) -> list[str]:
    """A fresh last Linear with `num_classes` outputs; returns its parameter names."""
    name, parent, old = last_linear(model)
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, num_classes))
    return [f"{name}.weight", f"{name}.bias"]


def _named_modules_of(model: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


def first_conv(model: nn.Module) -> tuple[str, nn.Module, nn.Conv2d]:
    name, conv = _named_modules_of(model, nn.Conv2d)[0]
    return name, _parent(model, name), conv  # type: ignore[return-value]


def last_linear(model: nn.Module) -> tuple[str, nn.Module, nn.Linear]:
    name, linear = _named_modules_of(model, nn.Linear)[-1]
    return name, _parent(model, name), linear  # type: ignore[return-value]


def _parent(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0]) if "." in name else model


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """New first conv for `in_channels`; its filters are the old RGB filters averaged."""
    import torch

    name, parent, old = first_conv(model)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        mean = old.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand(-1, in_channels, -1, -1) * (old.in_channels / in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, name.rpartition(".")[2], new)


def build_classifier(*, name: str, num_classes: int, in_channels: int | None = None) -> nn.Module:
    """A registered classifier (torchvision or LeNet) with random weights, `num_classes`
    outputs and `in_channels` input channels (None keeps the network's own). What the hidden
    registry model "classifier" rebuilds trained classifiers with."""
    from visiontool import registry
    from visiontool.errors import ConfigError

    spec = registry.get("model", name)
    if spec.task != "classify" or spec.hidden:
        raise ConfigError(f"{name!r} is not a classifier (see `visiontool models --task classify`)")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    model = spec.build(num_classes=num_classes)
    if in_channels is not None and first_conv(model)[2].in_channels != in_channels:
        replace_first_conv(model, in_channels)
    return model
