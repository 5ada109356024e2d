"""Recipes: detectors from the classic papers under the names users know (`tinyssd`,
`ssd-focal`, `yolo`, `frcnn-vgg16`), each a head composed over its default backbone (or
`--backbone`).

A recipe has no default weights: it trains per data set. `create_model("tinyssd")` builds it
with random weights for 20 classes (PASCAL VOC's count, for speed measurements);
`train --model tinyssd` composes it for the data set's classes, exactly as `train --head
tinyssd` does. Checkpoints record the composed detector, so they rebuild without this module.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from visiontool import registry
from visiontool.models.own import replace_head_class_layers
from visiontool.models.specs import ModelSpec

DEFAULT_CLASSES = 20  # + background: PASCAL VOC's label space, for `benchmark`


def build_recipe(head: str, *, num_classes: int | None = None, **arch: Any) -> Any:
    from visiontool.models.compose import build_detector

    spec = registry.get("head", head)
    arch.setdefault("backbone", spec.default_backbone)
    arch.setdefault("imgsz", spec.default_imgsz)
    return build_detector(head=head, num_classes=num_classes or DEFAULT_CLASSES + 1, **arch)


def recipe(name: str, head: str, input_size: int, description: str) -> ModelSpec:
    return registry.add(
        "model",
        ModelSpec(
            name=name,
            task="detect",
            build=partial(build_recipe, head),
            replace_class_layers=replace_head_class_layers,
            head=head,
            composes=head,
            input_size=input_size,
            description=description,
        ),
    )


recipe("tinyssd", "tinyssd", 256, "TinySSD (d2l): 5 scales of multibox anchors, from scratch")
recipe(
    "ssd-focal", "ssd-focal", 224, "SSD with focal loss (fast.ai): ResNet-18, 3 grids x 9 anchors"
)
recipe("yolo", "yolo", 416, "YOLOv2-style: ResNet-18, 5 priors, direct location prediction")
recipe(
    "frcnn-vgg16", "frcnn-classic", 800, "Faster R-CNN (2015 paper): VGG-16, 9 anchors, RoI pool"
)
