"""Build what a training run needs from its config: the model with its `ModelInfo`, the data
sets with their transforms, and the parameter groups.

Kept apart from the training loop so the loop reads as a loop. The task's spec
(`visiontool.tasks`) says which data sets it reads and which kind of model it trains
(`TaskSpec.model_task`: a detector, a classifier or the single-object model); `BUILDERS` holds
one builder per kind.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError, DataError
from visiontool.io.weights import weights_kind
from visiontool.models.info import ModelInfo, detector_classes
from visiontool.models.specs import HeadSpec, ModelSpec

DEFAULT_HEAD = "frcnn"  # `train` with neither --model nor --head
DEFAULT_CLASSIFIER = "resnet18"
BACKBONE_CLASSIFIER = "backbone-classifier"  # --task classify|multilabel --backbone NAME
DEFAULT_SINGLE = "single"  # the single-object model over --backbone (default resnet18)
DEFAULT_SINGLE_BACKBONE = "resnet18"
# options that shape a composed detector (backbone x head); a registry model ignores them
COMPOSE_OPTIONS = (
    "backbone", "fpn", "trainable_layers", "returned_layers", "backbone_weights", "arch",
)  # fmt: skip


# float options: (field, lowest, lowest allowed itself, highest or None, what the range means)
FLOAT_RANGES = (
    ("lr", 0.0, False, 1e30, "a number > 0 (and < 1e30)"),
    ("weight_decay", 0.0, True, 1e30, "a number >= 0 (0: no weight decay; < 1e30)"),
    ("warmup", 0.0, True, None, "a number of epochs >= 0 (0: no warmup)"),
    ("head_lr_mult", 0.0, False, None, "a number > 0 (the new layers' lr = lr x this)"),
    ("clip_grad", 0.0, True, None, "a gradient norm > 0 (0: no clipping)"),
    ("momentum", 0.0, True, 1.0, "a number in [0, 1)"),
    ("ema_decay", 0.0, False, 1.0, "a number in (0, 1)"),
)
# integer options: (field, lowest, what the range means); None (where allowed) is not checked
INT_RANGES = (
    ("freeze", 0, "a number of backbone stages >= 0"),
    ("trainable_layers", 0, "a number of backbone stages >= 0"),
    ("fpn_channels", 1, "a width >= 1"),
    ("box_head", 1, "a width >= 1"),
    ("patience", 0, "a number of validations >= 0 (0: no early stopping)"),
    ("log_every", 1, "a number of steps >= 1"),
)


def check_numbers(config: Any) -> None:
    """Every number in its range, found before anything is built or written: a NaN or
    infinite float (which args.json cannot even hold), a negative --clip-grad (gradient
    ascent), a negative --workers... is a usage error naming the option."""
    for name, low, closed, high, meaning in FLOAT_RANGES:
        value = getattr(config, name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value >= low if closed else value > low) and (high is None or value < high)
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} must be {meaning}, got {value}")
    for name, low, meaning in INT_RANGES:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be {meaning}, got {value}")
    from visiontool.runtime import check_imgsz, check_loader

    check_loader(config.workers, config.batch)
    check_imgsz(config.imgsz, config.batch, training=True)
    if not 0 <= config.seed < 2**63:
        raise ConfigError(f"--seed must be 0..2**63-1, got {config.seed}")


def resolve_model_choice(cfg: Any) -> tuple[str | None, str | None]:
    """(model, head) a run trains: `--head` composes a detector from parts; `--model` names a
    registry model (the same name means the same model in every command). Neither: the
    default head for detection, resnet18 for (multi-label) classification (the classifier over
    `--backbone` when one is given), the single-object model for single."""
    from visiontool.tasks.spec import get_task

    if cfg.head and cfg.model:
        raise ConfigError("pass --model NAME (a registry model) or --head NAME (compose), not both")
    kind = get_task(cfg.task).model_task
    if kind != "detect" and cfg.head:
        raise ConfigError(f"--head composes detectors (--task detect); --task {cfg.task} "
                          "names its model with --model")  # fmt: skip
    if kind == "classify":
        return cfg.model or (BACKBONE_CLASSIFIER if cfg.backbone else DEFAULT_CLASSIFIER), None
    if kind == "single":
        return cfg.model or DEFAULT_SINGLE, None
    if cfg.model:
        spec: ModelSpec = registry.get("model", cfg.model)
        return spec.name, spec.composes  # a recipe composes its head over --backbone
    return None, cfg.head or DEFAULT_HEAD


def anchor_fit(cfg: Any, imgsz: int) -> dict[str, Any] | None:
    """An `anchors fit` file as the head builders take it: the K fitted shapes and the scale
    from the fit's image size to the training size; the head spreads them over its levels."""
    if not cfg.anchors:
        return None
    from visiontool.io.anchors_file import read_anchors_json

    data = read_anchors_json(cfg.anchors)
    return {"wh": [list(map(float, wh)) for wh in data["wh"]],
            "scale": imgsz / float(data["imgsz"])}  # fmt: skip


def builder_ratios(cfg: Any) -> Any:
    """`--anchor-ratios` as the detector builder takes them. Users write width / height (2 =
    wide); the builder, and the `build` dict every checkpoint records, hold torchvision's
    height / width (`models.heads.anchors.torchvision_ratios`: r -> 1/r, order kept), so old
    and new checkpoints rebuild the same anchors. A resumed run keeps the ratios its
    checkpoint was built with: train args recorded before ratios meant width / height hold
    height / width values."""
    if cfg.resume:
        build = _resumed_build(cfg.resume)
        if build is not None:
            return build.get("anchor_ratios")
    from visiontool.models.heads.anchors import torchvision_ratios

    return torchvision_ratios(cfg.anchor_ratios)


def _resumed_build(path: str) -> dict[str, Any] | None:
    """The `build` dict of the checkpoint a run resumes (memory-mapped: its tensors are not
    read), or None when it has none (a registry model)."""
    import pickle

    import torch

    from visiontool.io.checkpoint import read_checkpoint

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError, pickle.UnpicklingError):  # the plain reader
        checkpoint = read_checkpoint(path)
    info = checkpoint.get("model_info") if isinstance(checkpoint, dict) else None
    build = info.get("build") if isinstance(info, dict) else None
    return build if isinstance(build, dict) and "anchor_ratios" in build else None


def build_detector_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    """A detector for the data set's classes (+ background), pretrained where asked, and the
    names of the parameters that start untrained (they learn at --head-lr-mult). The model
    keeps the data set's COCO category ids for --save-coco."""
    classes = list(dataset.classes)
    num_classes = len(classes) + 1
    model_name, head_name = resolve_model_choice(cfg)
    if head_name is not None:
        module, input_size = _composed_detector(cfg, head_name, num_classes)
    else:
        module, input_size = _registry_detector(cfg, model_name, num_classes)
    new = list(module.fresh_parameters)
    info = ModelInfo(
        name=cfg.model_name or f"{model_name or head_name}-{len(classes)}cls",
        task="detect",
        classes=classes,
        raw_classes=detector_classes(classes)[0],
        category_ids=list(dataset.category_ids),
        input_size=int(input_size),
        build=dict(module.model_info.build),
        weights="trained",
    )
    return _finish(cfg, module, info, new)


def _composed_detector(cfg: Any, head_name: str, num_classes: int) -> tuple[Any, int]:
    from visiontool.models.factory import create_model
    from visiontool.models.finetune import head_param_names

    head: HeadSpec = registry.get("head", head_name)
    if weights_kind(cfg.weights) == "default":
        raise ConfigError(
            "--weights DEFAULT needs a pretrained registry model: use --model NAME (see "
            "`visiontool models --task detect`), or --backbone-weights DEFAULT with "
            f"--head {head.name}"
        )
    imgsz = cfg.imgsz or head.default_imgsz
    module = create_model(
        "detector",
        num_classes=num_classes,
        head=head.name,
        backbone=cfg.backbone or head.default_backbone,
        fpn=cfg.fpn,
        imgsz=imgsz,
        anchor_sizes=cfg.anchor_sizes,
        anchor_ratios=builder_ratios(cfg),
        anchor_fit=anchor_fit(cfg, imgsz),
        fpn_channels=cfg.fpn_channels,
        box_head=cfg.box_head,
        arch=cfg.arch,
        returned_layers=cfg.returned_layers,
        trainable_layers=cfg.trainable_layers,
        backbone_weights=cfg.backbone_weights,
    )
    # only the trunk is pretrained (ImageNet): everything else is new
    module.fresh_parameters = tuple(
        head_param_names(module) if module.build_kwargs["frozen_bn"] else ()
    )
    return module, imgsz


def _registry_detector(cfg: Any, name: str, num_classes: int) -> tuple[Any, int]:
    from visiontool.models.factory import create_model, head_of

    spec = _registry_detector_spec(cfg, name)
    weights = cfg.weights if weights_kind(cfg.weights) == "default" else None
    module = create_model(spec.name, weights=weights, num_classes=num_classes)
    head = head_of(module.model_info)
    if cfg.imgsz and head is not None:
        head.set_input_size(module, cfg.imgsz)
    module.model_info = ModelInfo.from_dict(
        {**module.model_info.to_dict(), "build": {"model": spec.name, "num_classes": num_classes}}
    )
    return module, spec.input_size or cfg.imgsz or 0


def _registry_detector_spec(cfg: Any, name: str) -> ModelSpec:
    """The registry detector `--model NAME` names; the options that compose a detector from
    parts, which it cannot honour, are refused (only values the user gave: their defaults are
    None, and --backbone-weights none means what no option means)."""
    spec: ModelSpec = registry.get("model", name)
    if spec.task != "detect":
        raise ConfigError(
            f"--model {name!r} is a {spec.task} model; --task detect needs a detector"
        )
    given = [_flag(cfg, o) for o in COMPOSE_OPTIONS if _given(cfg, o)]
    if given:
        hint = f" --head {spec.head}" if spec.head else " --head NAME"
        raise ConfigError(
            f"{', '.join(given)} compose a detector from parts and do not apply to the registry "
            f"model {spec.name!r}: use{hint} {' '.join(given)} ... instead"
        )
    return spec


def check_model_options(cfg: Any) -> None:
    """What can be told of the model choice before anything is built or written: --model
    with --head, and composing options given to a registry detector."""
    from visiontool.tasks.spec import get_task

    model, head = resolve_model_choice(cfg)
    if get_task(cfg.task).model_task == "detect" and head is None and model is not None:
        _registry_detector_spec(cfg, model)


def build_classifier_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    """A classifier for the data set's classes (--task classify, and multilabel, which trains
    the same networks with per-class sigmoid outputs)."""
    from visiontool.models.factory import create_model
    from visiontool.tasks.spec import get_task

    task = get_task(cfg.task)
    classes = list(dataset.classes)
    name, _ = resolve_model_choice(cfg)
    spec: ModelSpec = registry.get("model", name)
    if spec.task != "classify":
        raise ConfigError(f"--model {name!r} is not a classifier (see `visiontool models`)")
    _no_detector_options(cfg, spec.name)
    if spec.name == BACKBONE_CLASSIFIER:
        module, new = _backbone_classifier(cfg, len(classes))
        mean_std = {"mean": module.image_mean, "std": module.image_std}
    else:
        pretrained = weights_kind(cfg.weights) == "default"
        module = create_model(
            spec.name, weights="DEFAULT" if pretrained else None, num_classes=len(classes)
        )
        new, mean_std = list(module.fresh_parameters), {}
    imgsz = cfg.imgsz or int(spec.input_size or 224)
    preprocess = {**_scaled_preprocess(spec.preprocess, imgsz), **mean_std}
    if task.whole_image:  # the whole image, squashed to a square, as training sees it
        preprocess.update(resize=imgsz, crop=imgsz, square=True)
    channels = _in_channels(module)
    if spec.name == BACKBONE_CLASSIFIER:
        build = dict(module.build_kwargs)
    elif spec.info is None:  # trained per data set (LeNet): rebuilt by its own name
        build = {"model": spec.name, "num_classes": len(classes), "in_channels": channels}
    else:
        build = {"model": "classifier", "name": spec.name, "num_classes": len(classes),
                 "in_channels": channels}  # fmt: skip
    info = ModelInfo(
        name=cfg.model_name or f"{spec.name}-{len(classes)}cls",
        task=task.name,
        classes=classes,
        raw_classes=classes,
        category_ids=list(range(len(classes))),
        input_size=imgsz,
        build=build,
        preprocess=preprocess,
        weights="trained",
        conf=task.train_conf(cfg),
    )
    return _finish(cfg, module, info, new)


def _no_detector_options(cfg: Any, name: str) -> None:
    """Options a classifier cannot honour are refused, never ignored: the backbone options
    for a torchvision classifier, the detector-head options for any."""
    own = (
        ("backbone", "backbone_weights", "trainable_layers") if name == BACKBONE_CLASSIFIER else ()
    )
    head = ("fpn", "returned_layers", "arch", "anchors", "anchor_sizes", "anchor_ratios")
    given = [_flag(cfg, o) for o in dict.fromkeys((*COMPOSE_OPTIONS, *head))
             if o not in own and _given(cfg, o)]  # fmt: skip
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise ConfigError(
            f"{', '.join(given)} {verb} not apply to the classifier {name!r}; a "
            f"classifier over a registered backbone is `--backbone NAME` without --model "
            f"(or --model {BACKBONE_CLASSIFIER}), which takes --backbone, --backbone-weights "
            "and --trainable-layers"
        )


def _flag(cfg: Any, option: str) -> str:
    """The option as the user typed it (--no-fpn for fpn False)."""
    if option == "fpn" and getattr(cfg, option, None) is False:
        return "--no-fpn"
    return f"--{option.replace('_', '-')}"


def _given(cfg: Any, option: str) -> bool:
    """Whether the user set `option`: None (the default) is not; --backbone-weights none is
    the default's own meaning; --no-fpn and --trainable-layers 0 are values, not absences."""
    value = getattr(cfg, option, None)
    if option == "backbone_weights":
        return weights_kind(value) != "none"
    if option in ("fpn", "trainable_layers"):
        return value is not None
    return bool(value)


def _backbone_classifier(cfg: Any, num_classes: int) -> tuple[Any, list[str]]:
    """The classifier over --backbone, and its fresh parameters (the head's, when the trunk
    starts from ImageNet weights; all of them otherwise)."""
    from visiontool.models.factory import create_model

    if weights_kind(cfg.weights) == "default":
        raise ConfigError(f"--weights DEFAULT: {BACKBONE_CLASSIFIER} has no pretrained weights; "
                          "use --backbone-weights DEFAULT (ImageNet trunk)")  # fmt: skip
    module = create_model(
        BACKBONE_CLASSIFIER, num_classes=num_classes,
        backbone=cfg.backbone or DEFAULT_CLASSIFIER, backbone_weights=cfg.backbone_weights,
        trainable_layers=cfg.trainable_layers,
    )  # fmt: skip
    pretrained = weights_kind(cfg.backbone_weights) != "none"
    new = [n for n, _ in module.named_parameters() if n.startswith("head.")] if pretrained else []
    return module, new


def build_single_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    """The single-object model (`models.single`) for the data set's classes (no background),
    over --backbone (default resnet18, --backbone-weights DEFAULT for ImageNet)."""
    from visiontool.models.factory import create_model
    from visiontool.models.finetune import head_param_names

    classes = list(dataset.classes)
    name, _ = resolve_model_choice(cfg)
    spec: ModelSpec = registry.get("model", name)
    if spec.task != "single":
        raise ConfigError(f"--model {name!r} is a {spec.task} model; --task single trains "
                          f"--model {DEFAULT_SINGLE} (over --backbone NAME)")  # fmt: skip
    extra = [_flag(cfg, o) for o in ("fpn", "returned_layers", "arch", "anchors",
                                                  "anchor_sizes", "anchor_ratios")
             if _given(cfg, o)]  # fmt: skip
    if extra:
        raise ConfigError(f"{', '.join(extra)} shape detectors' heads; the single-object model "
                          "takes --backbone, --backbone-weights, --trainable-layers, --imgsz "
                          "and --box-weight")  # fmt: skip
    if weights_kind(cfg.weights) == "default":
        raise ConfigError("--weights DEFAULT: the single-object model has no pretrained "
                          "weights; use --backbone-weights DEFAULT (ImageNet trunk)")  # fmt: skip
    imgsz = int(cfg.imgsz or spec.input_size or 224)
    module = create_model(
        spec.name, num_classes=len(classes), backbone=cfg.backbone or DEFAULT_SINGLE_BACKBONE,
        size=imgsz, box_weight=cfg.box_weight, backbone_weights=cfg.backbone_weights,
        trainable_layers=cfg.trainable_layers,
    )  # fmt: skip
    pretrained = weights_kind(cfg.backbone_weights) != "none"
    info = ModelInfo(
        name=cfg.model_name or f"{spec.name}-{module.build_kwargs['backbone']}-{len(classes)}cls",
        task="single",
        classes=classes,
        raw_classes=classes,
        category_ids=list(dataset.category_ids),
        input_size=imgsz,
        build=dict(module.build_kwargs),
        weights="trained",
    )
    return _finish(cfg, module, info, head_param_names(module) if pretrained else [])


BUILDERS = {
    "detect": build_detector_for_training,
    "classify": build_classifier_for_training,
    "single": build_single_for_training,
}
"""One builder per kind of model a task trains (`TaskSpec.model_task`)."""


def build_for_training(cfg: Any, dataset: Any) -> tuple[Any, ModelInfo, list[str]]:
    """(module, its ModelInfo, the parameter names that start untrained) for `cfg.task`."""
    from visiontool.tasks.spec import get_task

    return BUILDERS[get_task(cfg.task).model_task](cfg, dataset)


def _scaled_preprocess(preprocess: dict[str, Any], imgsz: int) -> dict[str, Any]:
    """The model's preprocessing at another input size: crop `imgsz`, resize in proportion."""
    base = dict(preprocess) or {"resize": 256, "crop": 224}
    ratio = base.get("resize", imgsz) / base.get("crop", imgsz)
    return {**base, "resize": int(round(imgsz * ratio)), "crop": imgsz}


def _in_channels(module: Any) -> int:
    from visiontool.models.classifiers import first_conv

    return int(first_conv(module)[2].in_channels)


def _finish(
    cfg: Any, module: Any, info: ModelInfo, new: list[str]
) -> tuple[Any, ModelInfo, list[str]]:
    """--weights PATH (start from a checkpoint) and --freeze, common to every task."""
    from visiontool.models.finetune import freeze_backbone_stages

    if weights_kind(cfg.weights) == "path":
        new = _load_for_finetune(module, cfg.weights)
    if cfg.freeze:
        freeze_backbone_stages(module, cfg.freeze)
    return module, info, new


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


def open_training_data(cfg: Any) -> tuple[Any, Any | None]:
    """Train and (optional) val splits as the task reads them (`TaskSpec.reads`, `adapt`:
    a multi-label run reads a detection set as the classes of each image)."""
    from visiontool.data.datasets import list_splits, open_dataset
    from visiontool.tasks.spec import get_task

    task = get_task(cfg.task)
    splits = list_splits(cfg.data, format=cfg.format)
    train_split = cfg.train_split if splits else None
    train = open_dataset(cfg.data, split=train_split, format=cfg.format, task=task.reads)
    train = task.adapt(train)
    if len(train) == 0:
        raise DataError(f"{cfg.data}: the {train_split or 'training'} split has no images")
    val = None
    if cfg.val_split in splits:
        val = open_dataset(cfg.data, split=cfg.val_split, format=cfg.format, task=task.reads)
        val = task.adapt(val)
        if len(val) == 0:
            val = None
    return train, val


def attach_transforms(cfg: Any, train: Any, val: Any | None, info: ModelInfo) -> str:
    """Set train/eval transforms; returns the augmentation preset used: `--augment`, else the
    task's, else the detector head's."""
    from visiontool.data.transforms import build_transforms
    from visiontool.tasks.spec import get_task, training_augment

    preset, size = training_augment(get_task(cfg.task), info, cfg.augment)
    train.transforms = build_transforms(preset, train=True, imgsz=size)
    if val is not None:
        # Validation feeds the raw uint8 images to the same Predictor `detect` and `eval`
        # use (detectors resize internally, classifiers get its resize/crop/normalise).
        val.transforms = None
    return preset


def move_augmentation(cfg: Any, train: Any, device: Any) -> Any:
    """`--augment-on device`: take the training transforms off the data set (the workers then
    only decode) into a `DeviceAugment` the trainer applies on `device`; None otherwise."""
    if cfg.augment_on != "device":  # a value other than cpu/device: refused by `_validate`
        return None
    from visiontool.data.classification import ClassificationDataset
    from visiontool.engine.train.device_augment import DeviceAugment

    transforms, train.transforms = train.transforms, None
    pairs = not isinstance(train, ClassificationDataset)  # detection sets warp boxes too
    return DeviceAugment(transforms, cfg.seed, device, pairs=pairs)


def compile_network(module: Any) -> str:
    """`torch.compile` in place (`nn.Module.compile`: state-dict keys, checkpoints and the EMA
    copy stay as they are) on what runs the same shapes every step: a detector's backbone (its
    heads sample proposals and run NMS, data-dependent work that would break the graph every
    step), else the whole network. Shapes that vary (detection inputs keep their aspect) are
    compiled as dynamic. Returns what was compiled, for the log."""
    backbone = getattr(module, "backbone", None)
    target, name = (backbone, "the backbone") if backbone is not None else (module, "the model")
    target.compile(dynamic=backbone is not None)
    return name


@contextlib.contextmanager
def uncompiled(module: Any) -> Iterator[None]:
    """`module` run eagerly inside (what `compile_network` compiled, restored after).

    Validation predicts with two batches in the model at once (`map_in_order`, two threads),
    and torch.compile is not thread-safe (with dynamic shapes it can fail outright); it would
    also recompile for inference mode and the validation shapes, for one pass an epoch."""
    compiled = [(m, m._compiled_call_impl) for m in module.modules()
                if getattr(m, "_compiled_call_impl", None) is not None]  # fmt: skip
    for part, _ in compiled:
        part._compiled_call_impl = None
    try:
        yield
    finally:
        for part, impl in compiled:
            part._compiled_call_impl = impl
