"""torchvision's pretrained detectors and classifiers, registered by short names.

Each `TorchvisionModel` row names the torchvision builder and weights enum it wraps; `_spec`
turns it into the `ModelSpec` the engine uses (build, pretrained weights, label space, class-
layer replacement through the detector's head spec), so `visiontool models` lists everything
without importing torch. Detector names (`frcnn`, `retinanet`, ...) are models; the head
families they belong to (`--head frcnn`) are a different registry kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from visiontool import registry
from visiontool.io.weights import IMAGENET_MEAN, IMAGENET_STD
from visiontool.models import class_names
from visiontool.models.info import ModelInfo
from visiontool.models.specs import ModelSpec


@dataclass(frozen=True)
class TorchvisionModel:
    """One torchvision builder and its weights, under our short name."""

    name: str
    tv_builder: str  # function name in torchvision.models / torchvision.models.detection
    weights_enum: str  # torchvision weights enum whose DEFAULT we use
    task: str
    dataset: str  # "coco" | "imagenet"
    input_size: int
    aliases: tuple[str, ...] = ()
    description: str = ""
    head: str | None = None  # detectors: the head family (its HeadSpec adapts the model)
    # the DEFAULT weights' file under WEIGHTS_URL and its size, so `visiontool models` can say
    # whether they are in torch's cache without importing torchvision (a test checks them
    # against torchvision's enum)
    weights_file: str = ""
    weights_mb: float | None = None
    # builder arguments when building without weights, and when training a classifier from it
    random_init: tuple[tuple[str, Any], ...] = ()
    classifier_init: tuple[tuple[str, Any], ...] = ()


DETECTORS = (
    TorchvisionModel(
        "frcnn",
        "fasterrcnn_resnet50_fpn",
        "FasterRCNN_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_resnet50_fpn",),
        "Faster R-CNN, ResNet-50 FPN",
        head="frcnn",
        weights_file="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        weights_mb=159.7,
    ),
    TorchvisionModel(
        "frcnn-v2",
        "fasterrcnn_resnet50_fpn_v2",
        "FasterRCNN_ResNet50_FPN_V2_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_resnet50_fpn_v2",),
        "Faster R-CNN v2, ResNet-50 FPN",
        head="frcnn",
        weights_file="fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth",
        weights_mb=167.1,
    ),
    TorchvisionModel(
        "frcnn-mobile",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fasterrcnn_mobilenet_v3_large_fpn",),
        "Faster R-CNN, MobileNetV3-Large FPN",
        head="frcnn",
        weights_file="fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
        weights_mb=74.2,
    ),
    TorchvisionModel(
        "frcnn-mobile-320",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        "detect",
        "coco",
        320,
        ("fasterrcnn_mobilenet_v3_large_320_fpn",),
        "Faster R-CNN, MobileNetV3-Large FPN at 320 px (fast on CPU)",
        head="frcnn",
        weights_file="fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth",
        weights_mb=74.2,
    ),
    TorchvisionModel(
        "retinanet",
        "retinanet_resnet50_fpn",
        "RetinaNet_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("retinanet_resnet50_fpn",),
        "RetinaNet, ResNet-50 FPN",
        head="retinanet",
        weights_file="retinanet_resnet50_fpn_coco-eeacb38b.pth",
        weights_mb=130.3,
    ),
    TorchvisionModel(
        "retinanet-v2",
        "retinanet_resnet50_fpn_v2",
        "RetinaNet_ResNet50_FPN_V2_Weights",
        "detect",
        "coco",
        800,
        ("retinanet_resnet50_fpn_v2",),
        "RetinaNet v2, ResNet-50 FPN",
        head="retinanet",
        weights_file="retinanet_resnet50_fpn_v2_coco-5905b1c5.pth",
        weights_mb=146.0,
    ),
    TorchvisionModel(
        "ssd",
        "ssd300_vgg16",
        "SSD300_VGG16_Weights",
        "detect",
        "coco",
        300,
        ("ssd300_vgg16", "ssd300"),
        "SSD300, VGG-16",
        head="ssd",
        weights_file="ssd300_vgg16_coco-b556d3b4.pth",
        weights_mb=136.0,
    ),
    TorchvisionModel(
        "ssdlite",
        "ssdlite320_mobilenet_v3_large",
        "SSDLite320_MobileNet_V3_Large_Weights",
        "detect",
        "coco",
        320,
        ("ssdlite320_mobilenet_v3_large", "ssdlite320"),
        "SSDlite320, MobileNetV3-Large",
        head="ssdlite",
        weights_file="ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
        weights_mb=13.4,
    ),
    TorchvisionModel(
        "fcos",
        "fcos_resnet50_fpn",
        "FCOS_ResNet50_FPN_Weights",
        "detect",
        "coco",
        800,
        ("fcos_resnet50_fpn",),
        "FCOS, ResNet-50 FPN",
        head="fcos",
        weights_file="fcos_resnet50_fpn_coco-99b0c9b7.pth",
        weights_mb=123.6,
    ),
)

# GoogLeNet without weights: no auxiliary heads, torchvision's own init; trained per data set it
# keeps the input scaling its ImageNet weights use (transform_input).
_GOOGLENET = {"random_init": (("aux_logits", False), ("init_weights", True)),
              "classifier_init": (("transform_input", True),)}  # fmt: skip

CLASSIFIERS = tuple(
    TorchvisionModel(
        name,
        name,
        enum,
        "classify",
        "imagenet",
        224,
        (),
        desc,
        weights_file=file,
        weights_mb=mb,
        **(_GOOGLENET if name == "googlenet" else {}),
    )  # fmt: skip
    for name, enum, desc, file, mb in (
        ("resnet18", "ResNet18_Weights", "ResNet-18", "resnet18-f37072fd.pth", 44.7),
        ("resnet34", "ResNet34_Weights", "ResNet-34", "resnet34-b627a593.pth", 83.3),
        ("resnet50", "ResNet50_Weights", "ResNet-50", "resnet50-11ad3fa6.pth", 97.8),
        ("vgg11", "VGG11_Weights", "VGG-11", "vgg11-8a719046.pth", 506.8),
        ("vgg16", "VGG16_Weights", "VGG-16", "vgg16-397923af.pth", 527.8),
        (
            "googlenet",
            "GoogLeNet_Weights",
            "GoogLeNet (Inception v1)",
            "googlenet-1378be20.pth",
            49.7,
        ),
        (
            "mobilenet_v3_large",
            "MobileNet_V3_Large_Weights",
            "MobileNetV3-Large",
            "mobilenet_v3_large-5c1a4163.pth",
            21.1,
        ),
        (
            "mobilenet_v3_small",
            "MobileNet_V3_Small_Weights",
            "MobileNetV3-Small",
            "mobilenet_v3_small-047dcff4.pth",
            9.8,
        ),
    )
)
WEIGHTS_URL = "https://download.pytorch.org/models/"  # where torchvision's weight files live


def zoo_entry(name: str) -> TorchvisionModel | None:
    """The torchvision row registered as `name` (None for models that are not from the zoo)."""
    return next((m for m in (*DETECTORS, *CLASSIFIERS) if m.name == name), None)


def weights_enum(spec: TorchvisionModel) -> Any:
    """The torchvision weights enum member we call DEFAULT for this spec."""
    import torchvision.models as tvm
    import torchvision.models.detection as tvd

    module = tvd if spec.task == "detect" else tvm
    return getattr(module, spec.weights_enum).DEFAULT


def build_zoo_model(
    spec: TorchvisionModel, *, weights: Any = None, num_classes: int | None = None, **overrides: Any
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
        if weights is None:
            for key, value in spec.random_init:
                kwargs.setdefault(key, value)
    if num_classes is not None and weights is None:
        kwargs["num_classes"] = num_classes
        for key, value in spec.classifier_init:  # a classifier for a new data set
            kwargs.setdefault(key, value)
    model = fn(weights=weights, **kwargs)
    if spec.task == "detect":
        from visiontool.models.heads.float32_anchors import float32_anchors

        float32_anchors(model)  # anchors in float32 under --amp / --half
    return model


def zoo_info(spec: TorchvisionModel, weights: str) -> ModelInfo:
    """The label space of the pretrained weights: COCO's 80 classes in torchvision's 91-entry
    layout, or ImageNet's 1000 (with ImageNet preprocessing)."""
    if spec.dataset == "coco":
        return ModelInfo(
            name=spec.name,
            task=spec.task,
            classes=class_names.coco80(),
            raw_classes=class_names.coco91(),
            category_ids=class_names.coco80_category_ids(),
            input_size=spec.input_size,
            build={"model": spec.name},
            weights=weights,
        )
    names = class_names.imagenet()
    return ModelInfo(
        name=spec.name,
        task=spec.task,
        classes=names,
        raw_classes=names,
        category_ids=list(range(len(names))),
        input_size=spec.input_size,
        build={"model": spec.name},
        preprocess=IMAGENET_PREPROCESS,
        weights=weights,
    )


IMAGENET_PREPROCESS = {"resize": 256, "crop": 224, "mean": list(IMAGENET_MEAN),
                       "std": list(IMAGENET_STD)}  # fmt: skip


def pretrained(spec: TorchvisionModel) -> tuple[Any, ModelInfo]:
    """Download (once, then cached) and load the torchvision weights."""
    from visiontool.io.weights import ensure_downloadable

    enum = weights_enum(spec)
    ensure_downloadable(enum.url, model=spec.name)
    module = build_zoo_model(spec, weights=enum)
    return module, zoo_info(spec, f"torchvision {spec.weights_enum}.DEFAULT")


def replace_class_layers(spec: TorchvisionModel, model: Any, num_classes: int) -> list[str]:
    """Detectors: through their head family's spec; classifiers: a new last Linear."""
    if spec.head is not None:
        return registry.get("head", spec.head).replace_class_layers(model, num_classes)
    from visiontool.models.classifiers import replace_last_linear

    return replace_last_linear(model, num_classes)


def _register(spec: TorchvisionModel) -> None:
    registry.add(
        "model",
        ModelSpec(
            name=spec.name,
            task=spec.task,
            build=partial(build_zoo_model, spec, weights=None),
            pretrained=partial(pretrained, spec),
            info=partial(zoo_info, spec),
            replace_class_layers=partial(replace_class_layers, spec),
            head=spec.head,
            source="torchvision",
            dataset=spec.dataset,
            input_size=spec.input_size,
            weights=f"{spec.weights_enum}.DEFAULT",
            preprocess=IMAGENET_PREPROCESS if spec.dataset == "imagenet" else {},
            description=spec.description,
            aliases=spec.aliases,
        ),
    )


for _spec in (*DETECTORS, *CLASSIFIERS):
    _register(_spec)
