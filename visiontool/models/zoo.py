"""torchvision's pretrained detectors and classifiers, registered by short names.

Each entry's builder takes `weights` ("DEFAULT" or None) and `num_classes`; metadata says which
torchvision builder and weights enum it wraps, the class list and the input size, so
`visiontool models` can list everything without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from visiontool import registry


@dataclass(frozen=True)
class ZooSpec:
    name: str
    tv_builder: str  # function name in torchvision.models / torchvision.models.detection
    weights_enum: str  # torchvision weights enum whose DEFAULT we use
    task: str
    dataset: str  # "coco" | "imagenet"
    input_size: int
    aliases: tuple[str, ...] = ()
    description: str = ""


DETECTORS = (
    ZooSpec(
        "frcnn",
        "fasterrcnn_resnet50_fpn",
        "FasterRCNN_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_resnet50_fpn",),
        "Faster R-CNN, ResNet-50 FPN",
    ),
    ZooSpec(
        "frcnn-v2",
        "fasterrcnn_resnet50_fpn_v2",
        "FasterRCNN_ResNet50_FPN_V2_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_resnet50_fpn_v2",),
        "Faster R-CNN v2, ResNet-50 FPN",
    ),
    ZooSpec(
        "frcnn-mobile",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_mobilenet_v3_large_fpn",),
        "Faster R-CNN, MobileNetV3-Large FPN",
    ),
    ZooSpec(
        "frcnn-mobile-320",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        "detect",
        "coco",
        320,
        ("fasterrcnn_mobilenet_v3_large_320_fpn",),
        "Faster R-CNN, MobileNetV3-Large FPN at 320 px (fast on CPU)",
    ),
    ZooSpec(
        "retinanet",
        "retinanet_resnet50_fpn",
        "RetinaNet_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("retinanet_resnet50_fpn",),
        "RetinaNet, ResNet-50 FPN",
    ),
    ZooSpec(
        "retinanet-v2",
        "retinanet_resnet50_fpn_v2",
        "RetinaNet_ResNet50_FPN_V2_Weights",
        "detect",
        "coco",
        800,
        ("retinanet_resnet50_fpn_v2",),
        "RetinaNet v2, ResNet-50 FPN",
    ),
    ZooSpec(
        "ssd",
        "ssd300_vgg16",
        "SSD300_VGG16_Weights",
        "detect",
        "coco",
        300,
        ("ssd300_vgg16", "ssd300"),
        "SSD300, VGG-16",
    ),
    ZooSpec(
        "ssdlite",
        "ssdlite320_mobilenet_v3_large",
        "SSDLite320_MobileNet_V3_Large_Weights",
        "detect",
        "coco",
        320,
        ("ssdlite320_mobilenet_v3_large", "ssdlite320"),
        "SSDlite320, MobileNetV3-Large",
    ),
    ZooSpec(
        "fcos",
        "fcos_resnet50_fpn",
        "FCOS_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fcos_resnet50_fpn",),
        "FCOS, ResNet-50 FPN",
    ),
)

CLASSIFIERS = tuple(
    ZooSpec(name, name, enum, "classify", "imagenet", 224, (), desc)
    for name, enum, desc in (
        ("resnet18", "ResNet18_Weights", "ResNet-18"),
        ("resnet34", "ResNet34_Weights", "ResNet-34"),
        ("resnet50", "ResNet50_Weights", "ResNet-50"),
        ("vgg11", "VGG11_Weights", "VGG-11"),
        ("vgg16", "VGG16_Weights", "VGG-16"),
        ("googlenet", "GoogLeNet_Weights", "GoogLeNet (Inception v1)"),
        ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "MobileNetV3-Large"),
        ("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "MobileNetV3-Small"),
    )
)


def weights_enum(spec: ZooSpec) -> Any:
    """The torchvision weights enum member we call DEFAULT for this spec."""
    import torchvision.models as tvm
    import torchvision.models.detection as tvd

    module = tvd if spec.task == "detect" else tvm
    return getattr(module, spec.weights_enum).DEFAULT


def build_zoo_model(
    spec: ZooSpec, *, weights: Any = None, num_classes: int | None = None, **overrides: Any
) -> Any:
    """Build `spec` through torchvision. `weights` is a weights enum member or None.

    With no weights we also pass `weights_backbone=None` (detectors) so that torchvision never
    downloads an ImageNet backbone behind the user's back.
    """
    import torchvision.models as tvm
    import torchvision.models.detection as tvd

    kwargs: dict[str, Any] = dict(overrides)
    if spec.task == "detect":
        fn = getattr(tvd, spec.tv_builder)
        kwargs.setdefault("weights_backbone", None)
    else:
        fn = getattr(tvm, spec.tv_builder)
        if spec.name == "googlenet" and weights is None:
            kwargs.setdefault("aux_logits", False)
            kwargs.setdefault("init_weights", True)
    if num_classes is not None and weights is None:
        kwargs["num_classes"] = num_classes
    return fn(weights=weights, **kwargs)


def _register(spec: ZooSpec) -> None:
    registry.add(
        registry.Entry(
            kind="model",
            name=spec.name,
            builder=partial(build_zoo_model, spec),
            aliases=spec.aliases,
            meta={
                "task": spec.task,
                "source": "torchvision",
                "spec": spec,
                "dataset": spec.dataset,
                "weights": f"{spec.weights_enum}.DEFAULT",
                "input_size": spec.input_size,
                "description": spec.description,
            },
        )
    )


for _spec in (*DETECTORS, *CLASSIFIERS):
    _register(_spec)
