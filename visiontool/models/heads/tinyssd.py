"""TinySSD head (Dive into Deep Learning): down-sampling blocks and a global max-pool over the
backbone's maps, five scales of `multibox_prior` anchors, cross-entropy + L1 on offsets.

The network itself is in `visiontool.models.onestage.tinyssd`; this module is its spec. Its
default backbone is the book's base network, registered as the backbone `tinyssd-base`.
"""

from __future__ import annotations

from typing import Any

from visiontool import registry
from visiontool.models.heads import onestage_parts as parts


def build(
    *,
    backbone: Any,
    num_classes: int,
    size: int = 256,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    anchor_fit: dict[str, Any] | None = None,
    image_mean: Any = None,
    image_std: Any = None,
    neg_ratio: float = 3.0,
    **_: Any,
) -> Any:
    """TinySSD over `backbone`; `anchor_sizes` in pixels (one group per scale, or one size per
    scale), `anchor_ratios` width/height for every scale; `neg_ratio` hard negatives per
    positive in the class loss (0: the book's mean over all anchors)."""
    from visiontool.models.onestage.tinyssd import RATIOS, SIZES, TinySSD

    parts.no_anchor_fit(anchor_fit, "tinyssd")
    sizes = parts.fraction_levels(anchor_sizes, len(SIZES), size, what="tinyssd anchor sizes")
    ratios = parts.one_ratio_group(anchor_ratios, "tinyssd")
    return TinySSD(
        backbone, num_classes, size=size, sizes=sizes or SIZES, ratios=ratios or RATIOS,
        neg_ratio=neg_ratio, image_mean=image_mean, image_std=image_std,
    )  # fmt: skip


SPEC = registry.add(
    "head",
    parts.head_spec(
        name="tinyssd",
        build=build,
        layers="ssd",
        default_backbone="tinyssd-base",
        default_imgsz=256,
        arch_options=("neg_ratio",),
        description="TinySSD (d2l): 5 scales of multibox anchors, CE + L1",
    ),
)
