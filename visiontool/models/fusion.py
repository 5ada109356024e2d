"""Fold inference-mode batch norms into the convolutions before them.

In eval mode a BatchNorm2d (or torchvision's FrozenBatchNorm2d) after a convolution is a fixed
per-channel affine map, so it can be folded into the convolution's weights and bias
(`torch.nn.utils.fusion.fuse_conv_bn_weights`): the same function, one memory pass fewer per
layer. On frcnn-mobile-320 that removes 46 batch norms and ~5% of the model's CPU time; outputs
agree to float rounding (tested). Only for inference: the fused model must not be trained.

Folding is safe only where the norm is applied straight to the convolution's output, so only
layouts known to do that are fused: consecutive children of `nn.Sequential` (torchvision's
`Conv2dNormActivation`, VGG-BN, ResNet downsample) and of the backbone's
`IntermediateLayerGetter` (which runs its children in order: the ResNet stem), and the
`convK`/`bnK` pairs of torchvision's ResNet blocks and stem.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def fuse_conv_bn(model: nn.Module) -> int:
    """Fold every recognised conv -> batch-norm pair in place; return how many were folded."""
    if model.training:
        raise ValueError("fuse_conv_bn is for inference: call model.eval() first")
    fused = 0
    for module in list(model.modules()):
        for conv_name, norm_name in _pairs(module):
            _fold(module, conv_name, norm_name)
            fused += 1
    return fused


def _pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv child, norm child) names whose norm directly follows the conv in `forward`."""
    children = module._modules
    if isinstance(module, (nn.Sequential, IntermediateLayerGetter)):
        names = list(children)
        candidates = list(pairwise(names))
    elif isinstance(module, (BasicBlock, Bottleneck, ResNet)):
        candidates = [(f"conv{k}", f"bn{k}") for k in (1, 2, 3)]
    else:
        return []
    returned = getattr(module, "return_layers", {})  # an output read from outside: keep it
    return [
        (conv, norm)
        for conv, norm in candidates
        if conv not in returned
        and _is_plain_conv(children.get(conv))
        and _is_fixed_norm(children.get(norm))
    ]


def _is_plain_conv(module: Any) -> bool:
    return type(module) is nn.Conv2d and module.padding_mode == "zeros"


def _is_fixed_norm(module: Any) -> bool:
    """A norm whose eval-mode output uses stored statistics (not the batch's own)."""
    return isinstance(module, _NORMS) and getattr(module, "running_mean", None) is not None


def _fold(parent: nn.Module, conv_name: str, norm_name: str) -> None:
    conv: nn.Conv2d = getattr(parent, conv_name)
    norm = getattr(parent, norm_name)
    eps = float(getattr(norm, "eps", 1e-5))
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, norm.running_mean, norm.running_var, eps, norm.weight, norm.bias
    )
    conv.weight, conv.bias = weight, bias
    setattr(parent, norm_name, nn.Identity())
