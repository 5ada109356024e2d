"""Small torch pieces shared by the backbone and head builders.

Kept apart from `backbones.py`/`heads.py` because those must import without torch (the registry
lists them for `visiontool models`); this module is imported inside builder bodies only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

PROBE_SIZE = 1024  # big enough that every stride up to 512 maps to a whole feature size


@dataclass(frozen=True)
class FeatureMap:
    """One feature map a backbone returns: its dict key, channels and stride in pixels."""

    name: str
    channels: int
    stride: int


class BackboneNoFPN(nn.Module):
    """A trunk's intermediate maps without a pyramid.

    With `reduce` (a 1x1 conv) it returns the last map as one tensor with `out_channels`
    channels, the single-map layout of torchvision's non-FPN MobileNet detectors; without it, an
    OrderedDict of the trunk's native maps (the multi-scale source SSD heads build on).
    """

    def __init__(self, body: nn.Module, out_channels: int, reduce: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.reduce = reduce
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        if self.reduce is None:
            return maps
        return self.reduce(list(maps.values())[-1])


class MultiScaleFeatures(nn.Module):
    """Backbone maps followed by extra stride-2 blocks: the SSD feature source."""

    def __init__(self, backbone: nn.Module, extras: nn.ModuleList):
        super().__init__()
        self.backbone = backbone
        self.extras = extras
        self.stages = tuple(
            tuple(f"backbone.{p}" for p in stage) for stage in getattr(backbone, "stages", ())
        )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = list(self.backbone(x).values())
        last = maps[-1]
        for block in self.extras:
            last = block(last)
            maps.append(last)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def probe(module: nn.Module, size: int = PROBE_SIZE) -> list[FeatureMap]:
    """Names, channels and strides of a backbone's outputs, from one forward on the meta device.

    The meta device runs shapes only, so this costs no compute and leaves weights untouched.
    """
    from torch.func import functional_call

    tensors = {
        **{k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()},
        **{k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()},
    }
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = functional_call(module, tensors, (torch.empty(1, 3, size, size, device="meta"),))
    finally:
        module.train(was_training)
    if isinstance(out, torch.Tensor):
        out = OrderedDict([("0", out)])
    return [
        FeatureMap(name, int(t.shape[1]), max(1, round(size / int(t.shape[-1]))))
        for name, t in out.items()
    ]


def stages_of(module: nn.Module) -> list[tuple[str, ...]]:
    """Parameter-name prefixes of a trunk's stages, from the input on.

    Understands the torchvision trunks we wrap (ResNet, GoogLeNet, MobileNetV3 and VGG feature
    stacks), as bare classifiers or as their `features` or an IntermediateLayerGetter over them.
    """
    children = dict(module.named_children())
    if "layer1" in children and "conv1" in children:
        names = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
        return [tuple(n for n in stage if n in children) for stage in names]
    if "inception3a" in children or ("conv2" in children and "conv3" in children):
        groups = [
            ("conv1",),
            ("conv2", "conv3"),
            ("inception3a", "inception3b"),
            ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
            ("inception5a", "inception5b"),
        ]
        return [tuple(n for n in g if n in children) for g in groups]
    if "features" in children:
        return [tuple(f"features.{p}" for p in s) for s in stages_of(children["features"])]
    blocks = list(children.items())
    if any(getattr(b, "_is_cn", False) for _, b in blocks):
        starts = [0] + [i for i, (_, b) in enumerate(blocks) if getattr(b, "_is_cn", False)]
        starts.append(len(blocks) - 1)
        ends = [*starts[1:], len(blocks)]
        return [
            tuple(blocks[j][0] for j in range(a, b))
            for a, b in zip(starts, ends, strict=True)
            if a < b
        ]
    if any(isinstance(b, nn.MaxPool2d) for _, b in blocks):
        stages: list[tuple[str, ...]] = []
        current: list[str] = []
        for name, block in blocks:
            current.append(name)
            if isinstance(block, nn.MaxPool2d):
                stages.append(tuple(current))
                current = []
        if current:
            stages.append(tuple(current))
        return stages
    return []


def matches(name: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """True when parameter `name` lies under one of `prefixes` (module paths)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d for a FrozenBatchNorm2d carrying the same statistics (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module
