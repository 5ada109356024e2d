"""The one place the trainer builds models: detectors from backbone x head, and classifiers.

Also the fine-tuning helpers: freezing backbone stages, optimizer parameter groups (no weight
decay on norms and biases, a learning-rate multiplier for new layers) and replacing the
class-dependent layers of a pretrained model (the torchvision fine-tuning recipe).

Built models carry `build_kwargs`: the plain-data dict a checkpoint records as
`ModelInfo.build`, from which `visiontool.models.loader` rebuilds the same architecture.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from visiontool import registry
from visiontool.errors import ConfigError, ModelLoadError, UnknownName
from visiontool.models.heads import prior_bias
from visiontool.models.parts import matches, stages_of

DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333


# --- detectors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that fixes a detector's architecture, resolved (no "default" left open)."""

    head: str
    backbone: str
    num_classes: int
    fpn: bool
    trainable_layers: int | None
    frozen_bn: bool
    anchor_sizes: list[list[float]] | None
    anchor_ratios: list[list[float]] | None
    min_size: int
    max_size: int
    imgsz: int | None
    fpn_channels: int = 256
    box_head: int = 1024
    returned_layers: list[int] | None = None

    def to_build(self) -> dict[str, Any]:
        """The checkpoint's `build` dict: `registry.get("model", "detector")` rebuilds it."""
        return {"model": "detector", **asdict(self)}


def allowed_combinations() -> list[tuple[str, str, bool]]:
    """Every (head, backbone, fpn) triple that builds."""
    return [
        (head.name, backbone, fpn)
        for head in registry.entries("head")
        for backbone in registry.names("backbone")
        for fpn in (True, False)
        if _combination_error(head, backbone, fpn) is None
    ]


def check_combination(head: str, backbone: str, fpn: bool | None = None) -> bool:
    """Validate names and pairing; return the resolved `fpn`. Raises ConfigError/UnknownName."""
    head_entry = registry.get("head", head)
    registry.get("backbone", backbone)
    if fpn is None:
        fpn = head_entry.meta["fpn"] in ("any", True)
    error = _combination_error(head_entry, backbone, fpn)
    if error:
        raise ConfigError(error)
    return fpn


def _combination_error(head: registry.Entry, backbone: str, fpn: bool) -> str | None:
    needs_fpn = head.meta["fpn"]
    only = head.meta.get("backbones")
    if only and backbone not in only:
        return (
            f"head {head.name!r} does not work with backbone {backbone!r}: "
            f"it needs one of {', '.join(only)}"
        )
    if needs_fpn is True and not fpn:
        return (
            f"head {head.name!r} needs an FPN backbone (multi-level maps of equal width): "
            f"use --fpn, or --no-fpn with frcnn, ssd or ssdlite"
        )
    if needs_fpn is False and fpn:
        return (
            f"head {head.name!r} builds its own multi-scale features from the plain backbone: "
            f"use --no-fpn, or --fpn with frcnn, retinanet or fcos"
        )
    return None


def build_detector(
    *,
    head: str,
    backbone: str,
    num_classes: int,
    fpn: bool | None = None,
    trainable_layers: int | None = None,
    backbone_weights: Any = None,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    imgsz: int | None = None,
    frozen_bn: bool | None = None,
    fpn_channels: int = 256,
    box_head: int = 1024,
    returned_layers: list[int] | None = None,
) -> nn.Module:
    """A torchvision detector: registered `backbone` under registered `head`.

    `fpn_channels` (feature width) and `box_head` (Faster R-CNN's box-head width) default to
    torchvision's 256 and 1024; smaller values make light models for small data sets.
    `returned_layers` overrides which backbone stages feed the head (e.g. [1, 2, 3, 5] gives a
    MobileNet FPN strides 4-32, for small objects).

    `num_classes` counts background (index 0). `fpn=None` takes the head's natural layout (FPN
    for frcnn/retinanet/fcos, none for ssd/ssdlite). `imgsz` is the longest image side (the fixed
    square size for ssd heads); without it `min_size`/`max_size` resize as torchvision does.
    `backbone_weights`: None, "DEFAULT" (ImageNet) or a classifier state-dict path.
    """
    fpn = check_combination(head, backbone, fpn)
    if num_classes < 2:
        raise ConfigError(f"a detector needs num_classes >= 2 (background + 1), got {num_classes}")
    head_entry = registry.get("head", head)
    backbone_entry = registry.get("backbone", backbone)
    pretrained = backbone_weights is not None and str(backbone_weights).lower() not in (
        "none",
        "random",
    )
    frozen = pretrained if frozen_bn is None else bool(frozen_bn)
    layers = backbone_entry.meta["layers"][head_entry.meta["layers"]]
    body = backbone_entry.builder(
        weights=backbone_weights,
        trainable_layers=trainable_layers,
        fpn=fpn,
        returned_layers=(
            list(returned_layers)
            if returned_layers
            else (layers if fpn or head_entry.meta["layers"] == "ssd" else None)
        ),
        extra_blocks=head_entry.meta.get("extra_blocks", "pool"),
        frozen_bn=frozen,
        fpn_channels=fpn_channels,
    )
    sizes: dict[str, int] = {}
    fixed = head_entry.meta.get("fixed_size")
    if fixed:
        sizes["size"] = int(imgsz or fixed)
    else:
        sizes["min_size"] = int(imgsz or min_size)
        sizes["max_size"] = int(imgsz or max_size)
    model = head_entry.builder(
        backbone=body,
        num_classes=num_classes,
        anchor_sizes=anchor_sizes,
        anchor_ratios=anchor_ratios,
        image_mean=backbone_entry.meta["mean"],
        image_std=backbone_entry.meta["std"],
        **sizes,
        **({"representation_size": box_head} if head_entry.name == "frcnn" else {}),
    )
    config = DetectorConfig(
        head=head_entry.name,
        backbone=backbone_entry.name,
        num_classes=int(num_classes),
        fpn=fpn,
        trainable_layers=_resolved_trainable(body, trainable_layers),
        frozen_bn=frozen,
        anchor_sizes=_plain(anchor_sizes),
        anchor_ratios=_plain(anchor_ratios),
        min_size=int(min_size),
        max_size=int(max_size),
        imgsz=None if imgsz is None else int(imgsz),
        fpn_channels=int(fpn_channels),
        box_head=int(box_head),
        returned_layers=[int(x) for x in returned_layers] if returned_layers else None,
    )
    model.build_kwargs = config.to_build()
    return model


def _resolved_trainable(body: nn.Module, requested: int | None) -> int:
    """How many top stages train, read back from the built backbone (for exact rebuilds)."""
    if requested is not None:
        return int(requested)
    stages = getattr(body, "stages", ())
    params = dict(body.named_parameters())
    frozen = 0
    for stage in stages:
        owned = [p for name, p in params.items() if matches(name, stage)]
        if owned and not any(p.requires_grad for p in owned):
            frozen += 1
        else:
            break
    return len(stages) - frozen


def _plain(values: Any) -> Any:
    """Anchor options as JSON-able nested lists (checkpoints hold plain data)."""
    if values is None:
        return None
    return [list(v) if isinstance(v, (list, tuple)) else v for v in values]


# --- classifiers -----------------------------------------------------------------------------


def classifier_names() -> list[str]:
    """Names `build_classifier` accepts: torchvision classifiers from the zoo, and LeNet."""
    zoo = [
        e.name
        for e in registry.entries("model")
        if e.meta.get("source") == "torchvision" and e.meta.get("task") == "classify"
    ]
    return [*zoo, "lenet"]


def build_classifier(
    *, name: str, num_classes: int, weights: Any = None, in_channels: int | None = None
) -> nn.Module:
    """A classifier with `num_classes` outputs and `in_channels` input channels.

    `weights`: None (random init), "DEFAULT" (torchvision ImageNet weights) or a checkpoint path
    (ours or a plain state dict); when the weights' class count differs, the class layer is
    replaced (fine-tuning). `in_channels=None` keeps the network's own (3; 1 for LeNet); another
    value replaces the first conv, averaging pretrained RGB filters over the new channels.
    """
    if name not in classifier_names():
        if registry.exists("model", name):
            raise ConfigError(f"{name!r} is a detector; classifiers are {classifier_names()}")
        raise UnknownName("classifier", name, classifier_names())
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    from visiontool.models.loader import weights_kind

    kind = weights_kind(None if weights is None else str(weights))
    if kind == "path":
        model = _classifier_from_file(name, Path(str(weights)))
    else:
        pretrained = kind == "default"
        model = _fresh_classifier(
            name, pretrained=pretrained, num_classes=None if pretrained else num_classes
        )
    if in_channels is not None and _first_conv(model)[2].in_channels != in_channels:
        _replace_first_conv(model, in_channels)
    if _last_linear(model)[2].out_features != num_classes:
        replace_class_layers(model, num_classes)
    channels = _first_conv(model)[2].in_channels
    if name == "lenet":
        build = {"model": "lenet", "num_classes": num_classes, "in_channels": channels}
    else:
        build = {
            "model": "classifier",
            "name": name,
            "num_classes": num_classes,
            "in_channels": channels,
        }
    model.build_kwargs = build
    return model


def _fresh_classifier(
    name: str, *, pretrained: bool, num_classes: int | None = None, in_channels: int | None = None
) -> nn.Module:
    if name == "lenet":
        if pretrained:
            raise ConfigError("lenet has no torchvision weights: pass --weights PATH or none")
        from visiontool.models.lenet import LeNet5

        return LeNet5(num_classes=num_classes or 10, in_channels=in_channels or 1)
    from visiontool.io.weights import ensure_downloadable
    from visiontool.models.zoo import build_zoo_model, weights_enum

    spec = registry.get("model", name).meta["spec"]
    enum = weights_enum(spec) if pretrained else None
    if enum is not None:
        ensure_downloadable(enum.url, model=name)
    extra = {"transform_input": True} if name == "googlenet" else {}  # as its ImageNet weights
    model = build_zoo_model(spec, weights=enum, num_classes=num_classes, **extra)
    if in_channels is not None and in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _classifier_from_file(name: str, path: Path) -> nn.Module:
    """Build with the file's own class and channel counts, then load strictly."""
    from visiontool.io.checkpoint import extract_state_dict, read_checkpoint
    from visiontool.models.info import ModelInfo
    from visiontool.models.loader import load_state

    state = extract_state_dict(read_checkpoint(path), path)
    probe_model = _fresh_classifier(name, pretrained=False, num_classes=2)
    conv_key = f"{_first_conv(probe_model)[0]}.weight"
    fc_key = f"{_last_linear(probe_model)[0]}.weight"
    if conv_key not in state or fc_key not in state:
        missing = conv_key if conv_key not in state else fc_key
        raise ModelLoadError(f"{path} is not a {name!r} checkpoint (no {missing!r})")
    classes, channels = int(state[fc_key].shape[0]), int(state[conv_key].shape[1])
    model = _fresh_classifier(name, pretrained=False, num_classes=classes, in_channels=channels)
    info = ModelInfo(
        name=name,
        task="classify",
        classes=[],
        raw_classes=[""] * classes,
        category_ids=[],
        input_size=0,
    )
    load_state(model, state, path=path, info=info)
    return model


def _named_modules_of(model: nn.Module, kind: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


def _first_conv(model: nn.Module) -> tuple[str, nn.Module, nn.Conv2d]:
    name, conv = _named_modules_of(model, nn.Conv2d)[0]
    return name, _parent(model, name), conv  # type: ignore[return-value]


def _last_linear(model: nn.Module) -> tuple[str, nn.Module, nn.Linear]:
    name, linear = _named_modules_of(model, nn.Linear)[-1]
    return name, _parent(model, name), linear  # type: ignore[return-value]


def _parent(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0]) if "." in name else model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """New first conv for `in_channels`; its filters are the old RGB filters averaged."""
    import torch

    name, parent, old = _first_conv(model)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        dilation=old.dilation,  # type: ignore[arg-type]
        groups=old.groups,
        bias=old.bias is not None,
    )
    with torch.no_grad():
        mean = old.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand(-1, in_channels, -1, -1) * (old.in_channels / in_channels))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    setattr(parent, name.rpartition(".")[2], new)


# --- fine-tuning helpers ---------------------------------------------------------------------


def replace_class_layers(model: nn.Module, num_classes: int) -> list[str]:
    """Give `model` fresh class-dependent layers for `num_classes`; return their param names.

    Detectors keep everything else (box regression, feature towers) pretrained: Faster R-CNN gets
    a new FastRCNNPredictor, RetinaNet/FCOS a new `cls_logits` conv, SSD new per-level
    classification convs. Classifiers get a new last Linear. `num_classes` counts background
    for detectors. The returned names are what `param_groups(new_param_names=...)` expects.
    """
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, FasterRCNN):
        return _new_frcnn_predictor(model, num_classes)
    if isinstance(model, (RetinaNet, FCOS)):
        return _new_dense_logits(model, num_classes)
    if isinstance(model, SSD):
        return _new_ssd_logits(model, num_classes)
    name, parent, old = _last_linear(model)
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, num_classes))
    return [f"{name}.weight", f"{name}.bias"]


def _new_frcnn_predictor(model: nn.Module, num_classes: int) -> list[str]:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    old = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, num_classes)
    return _param_names(model, "roi_heads.box_predictor")


def _new_dense_logits(model: nn.Module, num_classes: int) -> list[str]:
    cls_head = model.head.classification_head
    old = cls_head.cls_logits
    anchors = old.out_channels // cls_head.num_classes
    new = nn.Conv2d(old.in_channels, anchors * num_classes, kernel_size=3, stride=1, padding=1)
    nn.init.normal_(new.weight, std=0.01)
    nn.init.constant_(new.bias, prior_bias(0.01))
    cls_head.cls_logits = new
    cls_head.num_classes = num_classes
    return _param_names(model, "head.classification_head.cls_logits")


def _new_ssd_logits(model: nn.Module, num_classes: int) -> list[str]:
    cls_head = model.head.classification_head
    names = []
    for i, level in enumerate(cls_head.module_list):
        parent = level if isinstance(level, nn.Sequential) else cls_head.module_list
        key = str(len(level) - 1) if isinstance(level, nn.Sequential) else str(i)
        old = parent[int(key)]
        anchors = old.out_channels // cls_head.num_columns
        new = nn.Conv2d(
            old.in_channels,
            anchors * num_classes,
            kernel_size=old.kernel_size,  # type: ignore[arg-type]
            padding=old.padding,  # type: ignore[arg-type]
        )
        nn.init.xavier_uniform_(new.weight)
        nn.init.zeros_(new.bias)
        parent[int(key)] = new
        prefix = f"head.classification_head.module_list.{i}"
        names.append(f"{prefix}.{key}" if isinstance(level, nn.Sequential) else prefix)
    cls_head.num_columns = num_classes
    return [n for prefix in names for n in _param_names(model, prefix)]


def _param_names(model: nn.Module, prefix: str) -> list[str]:
    return [name for name, _ in model.named_parameters() if matches(name, [prefix])]


def backbone_stages(model: nn.Module) -> list[tuple[str, ...]]:
    """Parameter-name prefixes of the model's backbone stages, from the input on."""
    if hasattr(model, "backbone"):
        stages = getattr(model.backbone, "stages", None)
        if stages is None:
            body = getattr(model.backbone, "body", model.backbone)
            inner = "backbone.body." if body is not model.backbone else "backbone."
            stages = [tuple(inner + p for p in s) for s in stages_of(body)]
        else:
            stages = [tuple(f"backbone.{p}" for p in s) for s in stages]
    else:
        stages = getattr(model, "stages", None) or stages_of(model)
    if not stages:
        raise ConfigError(f"cannot tell the backbone stages of a {type(model).__name__}")
    return [tuple(s) for s in stages]


def freeze_backbone_stages(model: nn.Module, n: int) -> list[str]:
    """Stop gradients in the first `n` backbone stages; return the frozen parameter names.

    BatchNorm running statistics in those stages still update in train mode unless the backbone
    uses FrozenBatchNorm2d (the default when starting from ImageNet weights).
    """
    stages = backbone_stages(model)
    if not 0 <= n <= len(stages):
        raise ConfigError(f"--freeze must be 0..{len(stages)} for this model, got {n}")
    prefixes = [p for stage in stages[:n] for p in stage]
    frozen = []
    for name, param in model.named_parameters():
        if matches(name, prefixes):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def head_param_names(model: nn.Module) -> list[str]:
    """Parameters outside the backbone trunk: what is new when only the trunk is pretrained."""
    stages = backbone_stages(model)
    trunk = [p for stage in stages for p in stage]
    return [name for name, _ in model.named_parameters() if not matches(name, trunk)]


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    new_param_names: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Optimizer groups: {decay, no decay} x {pretrained, new}, empty ones dropped.

    Norm weights and all biases (1-d parameters) get no weight decay; parameters named in (or
    under a module named in) `new_param_names` learn at `lr * head_lr_mult`. Frozen parameters
    are left out. Each group carries a `name` for logging.
    """
    new = list(new_param_names)
    buckets: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (matches(name, new), param.ndim <= 1)
        buckets.setdefault(key, []).append(param)
    groups = []
    for (is_new, no_decay), params in sorted(buckets.items()):
        groups.append(
            {
                "name": f"{'new' if is_new else 'base'}_{'no_decay' if no_decay else 'decay'}",
                "params": params,
                "lr": lr * (head_lr_mult if is_new else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return groups
