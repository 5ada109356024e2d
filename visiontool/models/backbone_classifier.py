"""A classifier over any registered backbone: `train --task classify|multilabel --backbone NAME`.

The backbone's last map -> 3x3 conv + BatchNorm + ReLU -> global MAX pool -> one linear layer.
Why max and not average: in a multi-label image a class is present when it shows anywhere, and
the strongest response of a map says that better than its mean over a mostly empty background
(the weakly supervised choice of Oquab et al., CVPR 2015); for one label an image it does no
harm. Why a backbone and not only the torchvision classifiers: a small detection trunk that
keeps resolution (`tinyssd-base`, stride 8) learns shapes from scratch on a few thousand
images where ResNet-18 (stride 4 after its stem) stays near chance for epochs (see
benchmarks/RESULTS.md, multi-label).

The module takes normalised (N, 3, H, W) batches like every classifier (the model's
`preprocess` holds the backbone's mean and std) and returns (N, classes) logits.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

DEFAULT_BACKBONE = "resnet18"
DEFAULT_WIDTH = 128


class BackboneClassifier(nn.Module):
    """`backbone` (a module with `out_channels`, returning a map or an OrderedDict of maps)
    under a conv + global max pool + linear head (module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, width: int = DEFAULT_WIDTH):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(int(backbone.out_channels), width, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(width),
                act=nn.ReLU(inplace=True),
                pool=nn.AdaptiveMaxPool2d(1),
                flat=nn.Flatten(),
                fc=nn.Linear(width, num_classes),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        if isinstance(features, dict):
            features = list(features.values())[-1]
        return self.head(features)


def build_backbone_classifier(
    *,
    num_classes: int,
    backbone: str = DEFAULT_BACKBONE,
    backbone_weights: Any = None,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    width: int = DEFAULT_WIDTH,
) -> nn.Module:
    """A `BackboneClassifier` over registered `backbone`; the module carries `build_kwargs`
    (what a checkpoint records to rebuild it) and `image_mean`/`image_std` (the backbone's,
    for the model's preprocess)."""
    from visiontool.errors import ConfigError
    from visiontool.models.backbones import last_map_trunk

    if num_classes < 1:
        raise ConfigError(f"a classifier needs >= 1 class, got {num_classes}")
    spec, body, frozen = last_map_trunk(
        backbone, weights=backbone_weights, trainable_layers=trainable_layers, frozen_bn=frozen_bn
    )
    model = BackboneClassifier(body, int(num_classes), width=int(width))
    model.build_kwargs = {
        "model": "backbone-classifier", "backbone": spec.name, "num_classes": int(num_classes),
        "frozen_bn": frozen, "width": int(width),
    }  # fmt: skip
    model.image_mean, model.image_std = list(spec.mean), list(spec.std)
    return model


def replace_class_layer(model: Any, num_classes: int) -> list[str]:
    """A fresh last linear layer for `num_classes` classes (fine-tuning on new classes)."""
    old = model.head.fc
    model.head.fc = nn.Linear(old.in_features, num_classes)
    model.build_kwargs = {**model.build_kwargs, "num_classes": int(num_classes)}
    return ["head.fc.weight", "head.fc.bias"]
