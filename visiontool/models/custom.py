"""visiontool's own model entries: trainable detector families, classifiers and LeNet.

Importing this module registers them (the registry loads it for kind "model"); it also imports
the backbone and head modules so their registrations run. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models import backbones, heads  # noqa: F401  (registers backbones and heads)


def _no_weights(name: str, weights: Any) -> None:
    if weights is not None:
        raise ConfigError(
            f"model {name!r} is built per data set and has no default weights: "
            f"pass --weights CHECKPOINT (a visiontool checkpoint records its architecture)"
        )


@registry.register(
    "model",
    "detector",
    hidden=True,
    task="detect",
    dataset="custom",
    description="any registered backbone under any compatible head (rebuilt from checkpoints)",
)
def detector(*, weights: Any = None, **build: Any) -> Any:
    """Rebuild a trained detector from its checkpoint's `build` dict (random init)."""
    _no_weights("detector", weights)
    from visiontool.models.build import build_detector

    return build_detector(**build)


@registry.register(
    "model",
    "classifier",
    hidden=True,
    task="classify",
    dataset="custom",
    description="a torchvision classifier trained on a custom data set",
)
def classifier(*, weights: Any = None, **build: Any) -> Any:
    """Rebuild a trained classifier from its checkpoint's `build` dict (random init)."""
    _no_weights("classifier", weights)
    from visiontool.models.build import build_classifier

    return build_classifier(**build)


@registry.register(
    "model",
    "lenet",
    aliases=("lenet5",),
    task="classify",
    dataset="custom",
    input_size=32,
    description="LeNet-5: 1x32x32, 5x5 convs 6-16-120, avg pooling, tanh, FC 120-84-classes",
)
def lenet(*, weights: Any = None, num_classes: int = 10, in_channels: int = 1) -> Any:
    """LeNet-5 with random weights (trained weights come from a checkpoint)."""
    _no_weights("lenet", weights)
    from visiontool.models.lenet import LeNet5

    return LeNet5(num_classes=num_classes, in_channels=in_channels)
