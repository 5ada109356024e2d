"""What the classic one-stage heads (tinyssd, ssd-focal, yolo) share as spec behaviours: class
layers, anchors for `anchors check`, and their anchor options. Torch-free at import."""

from __future__ import annotations

from typing import Any

from visiontool.errors import ConfigError
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import per_level
from visiontool.models.specs import HeadSpec


def head_spec(**fields: Any) -> HeadSpec:
    """A `HeadSpec` with what these heads share: their model swaps its own class layers, keeps
    torchvision's one-stage inference settings and fixed-square transform, lays its anchors
    from its own maps, and builds its multi-scale maps without an FPN."""
    shared: dict[str, Any] = {
        "replace_class_layers": replace_class_layers,
        "configure": tv.configure_one_stage,
        "set_input_size": tv.set_input_size,
        "preresize": tv.preresize,
        "image_anchors": image_anchors,
        "fpn": False,
        "default_augment": "frcnn",
        "fixed_size": True,
    }
    return HeadSpec(**{**shared, **fields})


def replace_class_layers(model: Any, num_classes: int) -> list[str]:
    """Fresh class convs for new classes (the model knows which layers those are)."""
    return model.replace_class_layers(num_classes)


def image_anchors(model: Any, size: tuple[int, int]) -> tuple[Any, tuple[int, int]]:
    from visiontool.models.onestage.base import normalised_image_anchors

    return normalised_image_anchors(model, size)


def no_anchor_fit(anchor_fit: Any, head: str) -> None:
    if anchor_fit is not None:
        raise ConfigError(
            f"{head} lays the anchors of its paper (sizes as fractions of the image on a fixed "
            "number of scales): --anchors FILE fits yolo, frcnn, retinanet, ssd and fcos; use "
            "--anchor-sizes/--anchor-ratios to change them"
        )


def fraction_levels(sizes: Any, levels: int, imgsz: int, *, what: str) -> Any:
    """Pixel anchor sizes (one per level, or one group per level) as fractions of the input."""
    groups = per_level(sizes, levels, what=what, flat_is_per_level=True)
    if groups is None:
        return None
    return [tuple(s / float(imgsz) for s in group) for group in groups]


def one_ratio_group(ratios: Any, head: str) -> Any:
    """One list of width/height ratios for every scale, as multibox anchors take them.

    Builders receive torchvision's height/width meaning (what checkpoints record; `train`
    converts the user's width/height once, in `engine.train.setup`), so each is inverted here.
    """
    if ratios is None:
        return None
    values = list(ratios)
    if values and not all(isinstance(v, (int, float)) for v in values):
        groups = {tuple(float(x) for x in g) for g in values}
        if len(groups) != 1:
            raise ConfigError(f"{head} takes one list of ratios for every scale, got {values}")
        values = list(next(iter(groups)))
    if not values or min(values) <= 0:
        raise ConfigError(f"{head} anchor ratios must be positive numbers, got {values}")
    return tuple(1.0 / float(v) for v in values)
