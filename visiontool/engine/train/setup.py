"""Build what a training run needs from its config: the model with its `ModelInfo`, the data
sets with their transforms, and the parameter groups.

Kept apart from the training loop so the loop reads as a loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError, DataError
from visiontool.models.info import ModelInfo, detector_classes
from visiontool.models.loader import IMAGENET_MEAN, IMAGENET_STD, weights_kind

HEADS = ("frcnn", "retinanet", "fcos", "ssd", "ssdlite")
DEFAULT_BACKBONE = {
    "frcnn": "mobilenet_v3_large",
    "retinanet": "resnet18",
    "fcos": "resnet18",
    "ssd": "vgg16",
    "ssdlite": "mobilenet_v3_large",
}
DEFAULT_AUGMENT = {"frcnn": "frcnn", "retinanet": "frcnn", "fcos": "frcnn", "ssd": "ssd",
                   "ssdlite": "ssd"}  # fmt: skip
DEFAULT_IMGSZ = {"frcnn": 512, "retinanet": 512, "fcos": 512, "ssd": 300, "ssdlite": 320}


def read_anchors_file(path: str | Path) -> tuple[Any, Any]:
    """(sizes, ratios) from an anchors.json written by `visiontool anchors fit`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--anchors {path}: cannot read anchors JSON ({exc})") from exc
    if not isinstance(data, dict) or "sizes" not in data:
        raise ConfigError(f"--anchors {path}: expected keys 'sizes' and 'ratios'")
    return data["sizes"], data.get("ratios")


def build_detector_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    """A torchvision detector for the data set's classes (+ background), pretrained where
    asked, and the names of the parameters that start untrained (they learn at
    --head-lr-mult). The model keeps the data set's COCO category ids for --save-coco."""
    from visiontool.models import build

    classes = list(dataset.classes)
    num_classes = len(classes) + 1
    raw, _ = detector_classes(classes)
    category_ids = list(dataset.category_ids)
    wkind = weights_kind(cfg.weights)
    sizes, ratios = cfg.anchor_sizes, cfg.anchor_ratios
    if cfg.anchors:
        sizes, ratios = read_anchors_file(cfg.anchors)
    if cfg.model not in HEADS and not _is_zoo(cfg.model, "detect"):
        raise ConfigError(
            f"--model {cfg.model!r} is not a detection head ({', '.join(HEADS)}) "
            "or a torchvision detector from `visiontool models`"
        )
    if _is_zoo(cfg.model, "detect") and (wkind == "default" or cfg.model not in HEADS):
        if cfg.backbone:
            raise ConfigError(
                f"--backbone does not apply to the pretrained detector {cfg.model!r}; "
                f"use --model {_zoo_head(cfg.model)} --backbone {cfg.backbone} instead"
            )
        module, build_kwargs, new = _zoo_detector(cfg, num_classes, pretrained=wkind == "default")
        input_size = registry.get("model", cfg.model).meta["input_size"]
    else:
        imgsz = cfg.imgsz or DEFAULT_IMGSZ[cfg.model]
        options = {
            "head": cfg.model,
            "backbone": cfg.backbone or DEFAULT_BACKBONE[cfg.model],
            "num_classes": num_classes,
            "fpn": cfg.fpn,
            "imgsz": imgsz,
            "anchor_sizes": sizes,
            "anchor_ratios": ratios,
            "fpn_channels": cfg.fpn_channels,
            "box_head": cfg.box_head,
            "returned_layers": cfg.returned_layers,
        }
        try:
            module = build.build_detector(
                **options,
                trainable_layers=cfg.trainable_layers,
                backbone_weights=cfg.backbone_weights,
            )
        except ConfigError as exc:
            if cfg.anchors and "feature maps" in str(exc):
                raise ConfigError(
                    f"--anchors {cfg.anchors}: {exc}; fit one anchor per level with "
                    "`visiontool anchors fit --num <levels>` or pick --returned-layers to match"
                ) from exc
            raise
        build_kwargs = dict(module.build_kwargs)
        input_size = imgsz
        new = build.head_param_names(module) if build_kwargs["frozen_bn"] else []
    info = ModelInfo(
        name=cfg.name or f"{cfg.model}-{len(classes)}cls",
        task="detect",
        classes=list(classes),
        raw_classes=raw,
        category_ids=list(category_ids),
        input_size=int(input_size),
        build=build_kwargs,
        weights="trained",
    )
    if wkind == "path":
        new = _load_for_finetune(module, cfg.weights)
    if cfg.freeze:
        build.freeze_backbone_stages(module, cfg.freeze)
    return module, info, new


def _zoo_detector(cfg: Any, num_classes: int, *, pretrained: bool) -> tuple[Any, dict, list[str]]:
    from visiontool.models import build
    from visiontool.models.loader import load_model

    entry = registry.get("model", cfg.model)
    new: list[str] = []
    if pretrained:
        module = load_model(entry.name, "DEFAULT").module
        new = build.replace_class_layers(module, num_classes)
    else:
        module = entry.builder(weights=None, num_classes=num_classes)
    if cfg.imgsz:
        from visiontool.engine.predict.predictor import set_detector_input_size

        set_detector_input_size(module, cfg.imgsz)
    return module, {"model": entry.name, "num_classes": num_classes}, new


def build_classifier_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    from visiontool.models import build

    classes = list(dataset.classes)
    if not registry.exists("model", cfg.model):
        registry.get("model", cfg.model)  # raises UnknownName with suggestions
    entry = registry.get("model", cfg.model)
    if entry.meta.get("task") != "classify":
        raise ConfigError(f"--model {cfg.model!r} is not a classifier (see `visiontool models`)")
    wkind = weights_kind(cfg.weights)
    is_lenet = entry.name == "lenet"
    module = build.build_classifier(
        name=entry.name,
        num_classes=len(classes),
        weights="DEFAULT" if wkind == "default" else None,
    )
    imgsz = cfg.imgsz or int(entry.meta.get("input_size", 224))
    if is_lenet:
        preprocess = {"resize": imgsz, "crop": imgsz, "grayscale": True, "mean": [0.5],
                      "std": [0.5]}  # fmt: skip
    else:
        preprocess = {"resize": int(round(imgsz * 256 / 224)), "crop": imgsz,
                      "mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # fmt: skip
    info = ModelInfo(
        name=cfg.name or f"{entry.name}-{len(classes)}cls",
        task="classify",
        classes=list(classes),
        raw_classes=list(classes),
        category_ids=list(range(len(classes))),
        input_size=imgsz,
        build=dict(
            getattr(module, "build_kwargs", None)
            or {"model": entry.name, "num_classes": len(classes)}
        ),
        preprocess=preprocess,
        weights="trained",
    )
    new = _last_linear_params(module) if wkind == "default" else []
    if wkind == "path":
        new = _load_for_finetune(module, cfg.weights)
    if cfg.freeze:
        build.freeze_backbone_stages(module, cfg.freeze)
    return module, info, new


def _last_linear_params(module: Any) -> list[str]:
    """The class layer build_classifier replaced for the new classes."""
    from torch import nn

    name = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)][-1]
    return [f"{name}.weight", f"{name}.bias"]


def _load_for_finetune(module: Any, path: str) -> list[str]:
    """Start from a checkpoint's weights, skipping layers whose shape differs (the class
    layers when the classes changed); returns the parameters left at their fresh init."""
    from visiontool.io.checkpoint import extract_state_dict, read_checkpoint

    state = extract_state_dict(read_checkpoint(path), path)
    own = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise ConfigError(
            f"--weights {path}: only {len(fitting)} of {len(own)} tensors fit this "
            "architecture; pass the matching --model/--backbone"
        )
    module.load_state_dict(fitting, strict=False)
    return [name for name, _ in module.named_parameters() if name not in fitting]


def _is_zoo(name: str, task: str) -> bool:
    if not registry.exists("model", name):
        return False
    entry = registry.get("model", name)
    return entry.meta.get("source") == "torchvision" and entry.meta.get("task") == task


def _zoo_head(name: str) -> str:
    return next((h for h in HEADS if name.startswith(h)), "frcnn")


def open_training_data(cfg: Any) -> tuple[Any, Any | None]:
    """Train and (optional) val splits with transforms for the task and model family."""
    from visiontool.data.datasets import list_splits, open_dataset

    splits = list_splits(cfg.data, format=cfg.format)
    train_split = cfg.train_split if splits else None
    train = open_dataset(cfg.data, split=train_split, format=cfg.format, task=cfg.task)
    if len(train) == 0:
        raise DataError(f"{cfg.data}: the {train_split or 'training'} split has no images")
    val = None
    if cfg.val_split in splits:
        val = open_dataset(cfg.data, split=cfg.val_split, format=cfg.format, task=cfg.task)
        if len(val) == 0:
            val = None
    return train, val


def attach_transforms(cfg: Any, train: Any, val: Any | None, info: ModelInfo) -> str:
    """Set train/eval transforms; returns the augmentation preset used."""
    from visiontool.data.transforms import build_transforms

    if cfg.task == "classify":
        preset = cfg.augment or "classify"
        size = info.input_size
    else:
        preset = cfg.augment or DEFAULT_AUGMENT.get(cfg.model, "frcnn")
        size = None if preset == "frcnn" else info.input_size
    train.transforms = build_transforms(preset, train=True, imgsz=size)
    if val is not None:
        # Validation feeds the raw uint8 images to the same Predictor `detect` and `eval`
        # use (detectors resize internally, classifiers get its resize/crop/normalise).
        val.transforms = None
    return preset
