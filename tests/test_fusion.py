"""Folding batch norms into convolutions: same outputs to float rounding, only where safe."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from visiontool.models.fusion import fuse_conv_bn

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def with_real_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with non-trivial statistics and affine terms, as after training."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, NORMS):
            n = module.running_mean.numel()
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, NORMS) for m in model.modules())


@pytest.mark.parametrize("build", [mobilenet_v3_small, resnet18])
def test_every_norm_is_folded_and_outputs_agree(build):
    torch.manual_seed(0)
    model = with_real_statistics(build(weights=None, num_classes=10))
    x = torch.rand(2, 3, 96, 96)
    with torch.inference_mode():
        before = model(x)
    norms = count_norms(model)
    assert fuse_conv_bn(model) == norms > 0
    assert count_norms(model) == 0
    with torch.inference_mode():
        after = model(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4)


def test_frozen_batch_norms_of_pretrained_detector_backbones_fold_too():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU())
    model = with_real_statistics(model)
    x = torch.rand(1, 3, 16, 16)
    before = model(x)
    assert fuse_conv_bn(model) == 1 and isinstance(model[1], nn.Identity)
    assert torch.allclose(before, model(x), atol=1e-5)


def test_norms_not_straight_after_a_conv_or_read_from_outside_are_kept():
    apart = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8)).eval()
    assert fuse_conv_bn(apart) == 0
    body = nn.Sequential()
    body.add_module("conv", nn.Conv2d(3, 8, 3))
    body.add_module("bn", nn.BatchNorm2d(8))
    getter = IntermediateLayerGetter(body, return_layers={"conv": "0", "bn": "1"}).eval()
    assert fuse_conv_bn(getter) == 0  # "conv"'s own output is returned: folding would alter it


def test_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval"):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
