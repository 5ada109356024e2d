"""visiontool's own model entries: LeNet, and the hidden entries checkpoints rebuild from.

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
