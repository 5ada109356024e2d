"""Multi-scale SSD head with focal loss (fast.ai 2018, lesson 9): three stride-2 conv blocks on
the backbone's last map, 9 anchors per cell, tanh-bounded boxes, per-class sigmoid + focal loss.

The network itself is in `visiontool.models.onestage.ssd_focal`; this module is its spec.
"""

from __future__ import annotations

from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models.heads import onestage_parts as parts


def build(
    *,
    backbone: Any,
    num_classes: int,
    size: int = 224,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    anchor_fit: dict[str, Any] | None = None,
    image_mean: Any = None,
    image_std: Any = None,
    width: int = 256,
    dropout: float = 0.1,
    alpha: float = 0.25,
    gamma: float = 2.0,
    **_: Any,
) -> Any:
    """The focal-loss SSD over `backbone`'s last map; `width` channels per block."""
    from visiontool.models.onestage.ssd_focal import FocalSSD

    parts.no_anchor_fit(anchor_fit, "ssd-focal")
    if anchor_sizes is not None or anchor_ratios is not None:
        raise ConfigError(
            "ssd-focal lays 9 anchors per cell (zooms 0.75, 1, 1.3 x aspects 1:1, 1:0.5, "
            "0.5:1 of the cell): it takes no --anchor-sizes/--anchor-ratios"
        )
    return FocalSSD(
        backbone, num_classes, size=size, width=int(width), dropout=float(dropout),
        alpha=float(alpha), gamma=float(gamma), image_mean=image_mean, image_std=image_std,
    )  # fmt: skip


SPEC = registry.add(
    "head",
    parts.head_spec(
        name="ssd-focal",
        build=build,
        layers="last",
        default_backbone="resnet18",
        default_imgsz=224,
        arch_options=("width", "dropout", "alpha", "gamma"),
        description="SSD + focal loss (fast.ai): 3 grids, 9 anchors a cell",
    ),
)
