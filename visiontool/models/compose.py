"""Detectors composed from parts: any registered backbone under any compatible head.

`build_detector` checks the pair, builds the backbone in the layout the head's spec asks for
(FPN or not, which stages, which extra level) and hands it to the head's builder. The built
model carries `build_kwargs`, the plain-data dict a checkpoint records as `ModelInfo.build`,
from which the hidden registry model "detector" rebuilds the same architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.io.weights import weights_kind
from visiontool.models.specs import HeadSpec

OWN_FLAGS = ("box_head",)  # head options that have their own `train` flag
DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that fixes a composed detector's architecture, resolved (no default left
    open)."""

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
    anchor_fit: dict[str, Any] | None = None  # `anchors fit` shapes, spread over the levels
    arch: dict[str, Any] | None = None  # the head's own options (`HeadSpec.arch_options`)

    def to_build(self) -> dict[str, Any]:
        """The checkpoint's `build` dict: `create_model("detector", **rest)` rebuilds it."""
        return {"model": "detector", **asdict(self)}


def allowed_combinations() -> list[tuple[str, str, bool]]:
    """Every (head, backbone, fpn) triple that builds."""
    return [
        (head.name, backbone, fpn)
        for head in registry.specs("head")
        for backbone in registry.names("backbone")
        for fpn in (True, False)
        if _combination_error(head, backbone, fpn) is None
    ]


def check_combination(head: str, backbone: str, fpn: bool | None = None) -> bool:
    """Validate names and pairing; return the resolved `fpn`. Raises ConfigError/UnknownName."""
    spec: HeadSpec = registry.get("head", head)
    registry.get("backbone", backbone)
    if fpn is None:
        fpn = spec.fpn is not False
    error = _combination_error(spec, backbone, fpn)
    if error:
        raise ConfigError(error)
    return fpn


def _combination_error(head: HeadSpec, backbone: str, fpn: bool) -> str | None:
    if fpn and not registry.get("backbone", backbone).fpn:
        return f"backbone {backbone!r} has one feature map and cannot build an FPN: use --no-fpn"
    if head.backbones and backbone not in head.backbones:
        return (
            f"head {head.name!r} does not work with backbone {backbone!r}: "
            f"it needs one of {', '.join(head.backbones)}"
        )
    if head.fpn is True and not fpn:
        return (
            f"head {head.name!r} needs an FPN backbone (multi-level maps of equal width): "
            f"use --fpn, or --no-fpn with {_heads_where(lambda h: h.fpn is not True)}"
        )
    if head.fpn is False and fpn:
        return (
            f"head {head.name!r} builds its own multi-scale features from the plain backbone: "
            f"use --no-fpn, or --fpn with {_heads_where(lambda h: h.fpn is not False)}"
        )
    return None


def _heads_where(test: Any) -> str:
    names = [h.name for h in registry.specs("head") if test(h)]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


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
    anchor_fit: dict[str, Any] | None = None,
    arch: dict[str, Any] | None = None,
) -> Any:
    """A detector: registered `backbone` under registered `head`.

    `fpn_channels` (feature width) and `box_head` (Faster R-CNN's box-head width) default to
    torchvision's 256 and 1024; smaller values make light models for small data sets.
    `returned_layers` overrides which backbone stages feed the head (e.g. [1, 2, 3, 5] gives a
    MobileNet FPN strides 4-32, for small objects). `anchor_fit` ({"wh": K fitted shapes,
    "scale": training size / fit size}, from `anchors fit`) replaces the anchor sizes and ratios
    with the fitted shapes spread over the head's levels by size. `arch` holds the head's own
    options (`train --arch KEY=VALUE`), checked against `HeadSpec.arch_options`.

    `num_classes` counts background (index 0). `fpn=None` takes the head's natural layout.
    `imgsz` is the longest image side (the fixed square size for fixed-size heads); without it
    `min_size`/`max_size` resize as torchvision does. `backbone_weights`: None, "DEFAULT"
    (ImageNet) or a classifier state-dict path.
    """
    fpn = check_combination(head, backbone, fpn)
    if num_classes < 2:
        raise ConfigError(f"a detector needs num_classes >= 2 (background + 1), got {num_classes}")
    head_spec: HeadSpec = registry.get("head", head)
    arch = check_arch(head_spec, arch)
    backbone_spec = registry.get("backbone", backbone)
    pretrained = weights_kind(backbone_weights) != "none"
    frozen = pretrained if frozen_bn is None else bool(frozen_bn)
    layers = backbone_spec.layers[head_spec.layers]
    body = backbone_spec.build(
        weights=backbone_weights,
        trainable_layers=trainable_layers,
        fpn=fpn,
        returned_layers=(
            list(returned_layers)
            if returned_layers
            else (layers if fpn or head_spec.fpn is False else None)
        ),
        extra_blocks=head_spec.extra_blocks,
        frozen_bn=frozen,
        fpn_channels=fpn_channels,
    )
    model = head_spec.build(
        backbone=body,
        num_classes=num_classes,
        anchor_sizes=anchor_sizes,
        anchor_ratios=anchor_ratios,
        image_mean=backbone_spec.mean,
        image_std=backbone_spec.std,
        min_size=int(imgsz or min_size),
        max_size=int(imgsz or max_size),
        size=int(imgsz or head_spec.default_imgsz),
        box_head=box_head,
        anchor_fit=anchor_fit,
        **arch,
    )
    config = DetectorConfig(
        head=head_spec.name,
        backbone=backbone_spec.name,
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
        anchor_fit=anchor_fit,
        arch=arch or None,
    )
    model.build_kwargs = config.to_build()
    return model


def check_arch(head: HeadSpec, arch: dict[str, Any] | None) -> dict[str, Any]:
    """The head's own options, each one the head declares (ConfigError naming the valid
    ones otherwise). Options with their own flag (`--box-head`) are not taken here."""
    arch = dict(arch or {})
    valid = arch_options(head)
    unknown = sorted(set(arch) - set(valid))
    if unknown:
        raise ConfigError(
            f"head {head.name!r} has no option {', '.join(unknown)} "
            f"(its --arch options: {', '.join(valid) or 'none'})"
        )
    return arch


def arch_options(head: HeadSpec) -> list[str]:
    """What `train --arch` may set for `head` (`box_head` has its own flag, --box-head)."""
    return [o for o in head.arch_options if o not in OWN_FLAGS]


def _resolved_trainable(body: Any, requested: int | None) -> int:
    """How many top stages train, read back from the built backbone (for exact rebuilds)."""
    from visiontool.models.parts import matches

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
