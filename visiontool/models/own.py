"""visiontool's own model entries: LeNet, the single-object detector, the classifier over any
backbone, and the hidden entries checkpoints rebuild from.

"detector" rebuilds any backbone x head composition from a checkpoint's `build` dict;
"classifier" rebuilds a torchvision classifier trained on a custom data set. Neither has
default weights: their weights come from the checkpoint. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from visiontool import registry
from visiontool.models.specs import ModelSpec


def build_detector(**build: Any) -> Any:
    from visiontool.models.compose import build_detector as compose

    return compose(**build)


def build_classifier(**build: Any) -> Any:
    from visiontool.models.classifiers import build_classifier as classifier

    return classifier(**build)


def build_lenet(*, num_classes: int | None = None, in_channels: int = 1) -> Any:
    from visiontool.models.lenet import LeNet5

    return LeNet5(num_classes=num_classes or 10, in_channels=in_channels)


def build_single(*, num_classes: int | None = None, **arch: Any) -> Any:
    from visiontool.models.single import build_single_object

    return build_single_object(num_classes=num_classes or 1, **arch)


def replace_single_class_layers(model: Any, num_classes: int) -> list[str]:
    """A fresh last layer for `num_classes` classes (+ the 4 box numbers)."""
    from torch import nn

    old = model.head.out
    model.head.out = nn.Linear(old.in_features, 4 + num_classes)
    model.num_classes = num_classes
    model.build_kwargs = {**model.build_kwargs, "num_classes": num_classes}
    return ["head.out.weight", "head.out.bias"]


def replace_head_class_layers(model: Any, num_classes: int) -> list[str]:
    """A composed detector's class layers, through the head spec its build records."""
    return registry.get("head", model.build_kwargs["head"]).replace_class_layers(model, num_classes)


def replace_last_linear(model: Any, num_classes: int) -> list[str]:
    from visiontool.models.classifiers import replace_last_linear as replace

    return replace(model, num_classes)


registry.add(
    "model",
    ModelSpec(
        name="detector",
        task="detect",
        build=build_detector,
        replace_class_layers=replace_head_class_layers,
        hidden=True,
        description="any registered backbone under any compatible head (rebuilt from checkpoints)",
    ),
)
registry.add(
    "model",
    ModelSpec(
        name="classifier",
        task="classify",
        build=build_classifier,
        replace_class_layers=replace_last_linear,
        hidden=True,
        description="a torchvision classifier trained on a custom data set",
    ),
)
registry.add(
    "model",
    ModelSpec(
        name="lenet",
        task="classify",
        build=build_lenet,
        replace_class_layers=replace_last_linear,
        input_size=32,
        preprocess={"resize": 32, "crop": 32, "grayscale": True, "mean": [0.5], "std": [0.5]},
        description="LeNet-5: 1x32x32, 5x5 convs 6-16-120, avg pooling, tanh, FC 120-84-classes",
        aliases=("lenet5",),
    ),
)
registry.add(
    "model",
    ModelSpec(
        name="single",
        task="single",
        build=build_single,
        replace_class_layers=replace_single_class_layers,
        input_size=224,
        description="largest object: backbone (train --backbone, default resnet18) + a head of "
        "4 box numbers and class scores (trained per data set)",
    ),
)


def build_backbone_classifier(*, num_classes: int | None = None, **arch: Any) -> Any:
    from visiontool.models.backbone_classifier import build_backbone_classifier as build

    return build(num_classes=num_classes or 1, **arch)


def replace_backbone_classifier_layer(model: Any, num_classes: int) -> list[str]:
    from visiontool.models.backbone_classifier import replace_class_layer

    return replace_class_layer(model, num_classes)


registry.add(
    "model",
    ModelSpec(
        name="backbone-classifier",
        task="classify",
        build=build_backbone_classifier,
        replace_class_layers=replace_backbone_classifier_layer,
        input_size=224,
        description="any backbone (train --backbone, default resnet18) + conv, global max pool, "
        "linear (trained per data set)",
    ),
)
