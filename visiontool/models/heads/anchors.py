"""Anchor options of torchvision-style heads, per feature level (pure Python, no torch).

`--anchor-sizes`/`--anchor-ratios` and `anchors fit` files arrive in several shapes; these
functions turn them into one tuple per feature level, or say clearly why they do not fit. Sizes
given as a flat list mean one size per level; ratios given as a flat list apply at every level;
a list of one group is repeated on every level.

Two ratio meanings, one boundary. Users write a ratio as width / height everywhere (2 = twice
as wide as tall: `train --anchor-ratios`, `TrainConfig.anchor_ratios`, `anchors prior|grid|
label --ratios`, `anchors fit` output). The builders (`create_model("detector",
anchor_ratios=...)`, the checkpoint's `build` dict, `DetectorConfig.anchor_ratios`) and
everything below them take torchvision's `AnchorGenerator` meaning, height / width, which is
what checkpoints have always recorded. `torchvision_ratios` converts user values once, in
`engine.train.setup`, before they enter the build dict, so every checkpoint written before or
after rebuilds the same anchors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from visiontool.errors import ConfigError

Levels = tuple[tuple[float, ...], ...]
DEFAULT_RATIOS = (0.5, 1.0, 2.0)


def torchvision_ratios(ratios: Any) -> Any:
    """User anchor ratios (width / height, 2 = wide) as the detector builders take them
    (torchvision's height / width): every value r becomes 1/r, in the same order and the same
    shape (None, a flat list, or a list of per-level groups). The same anchors result. Values
    that are not positive finite numbers come back as given, for `per_level` to report."""
    if ratios is None:
        return None
    groups = [list(v) if isinstance(v, (list, tuple)) else v for v in ratios]
    flat = [x for v in groups for x in (v if isinstance(v, list) else [v])]
    if not all(_positive(x) for x in flat):
        return ratios
    return [[1.0 / float(x) for x in v] if isinstance(v, list) else 1.0 / float(v) for v in groups]


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def per_level(values: Any, levels: int, *, what: str, flat_is_per_level: bool) -> Levels | None:
    """Normalise an anchor option to one tuple per feature level (see the module docstring)."""
    if values is None:
        return None
    values = list(values)
    if not values:
        raise ConfigError(f"{what} is empty")
    if all(isinstance(v, (int, float)) for v in values):
        if flat_is_per_level and levels > 1:
            groups = [(float(v),) for v in values]
        else:
            groups = [tuple(float(v) for v in values)]
    else:
        groups = [tuple(float(x) for x in group) for group in values]
    if len(groups) == 1:
        groups = groups * levels
    if len(groups) != levels:
        raise ConfigError(
            f"{what}: the backbone gives {levels} feature maps, so pass {levels} values "
            f"(one per level) or {levels} groups, got {len(groups)}"
        )
    if any(not group or min(group) <= 0 for group in groups):
        raise ConfigError(f"{what} must be positive numbers, got {groups}")
    return tuple(groups)


def is_pyramid(strides: Sequence[int]) -> bool:
    """Several maps of strictly growing stride (an FPN or an SSD feature stack)."""
    return len(strides) > 1 and all(b > a for a, b in pairwise(strides))


def generator_levels(
    strides: Sequence[int],
    sizes: Any,
    ratios: Any,
    *,
    head: str,
    default_sizes: Callable[[Sequence[int]], Levels],
    anchor_free: bool = False,
) -> tuple[Levels, Levels]:
    """Sizes and ratios per level for an AnchorGenerator: user values checked, or the head's
    defaults. Anchor-free heads (FCOS) take one size per level and no ratios."""
    levels = len(strides)
    size_groups = per_level(sizes, levels, what="anchor sizes", flat_is_per_level=True)
    if anchor_free:
        if ratios is not None:
            raise ConfigError(
                f"{head} is anchor-free: pass anchor sizes (one per level), not ratios"
            )
        if size_groups and any(len(g) != 1 for g in size_groups):
            raise ConfigError(f"{head} takes one anchor size per feature level")
        ratio_groups: Levels = ((1.0,),) * levels
    else:
        ratio_groups = per_level(ratios, levels, what="anchor ratios", flat_is_per_level=False) or (
            (DEFAULT_RATIOS,) * levels
        )
    size_groups = size_groups or default_sizes(strides)
    counts = {len(s) * len(r) for s, r in zip(size_groups, ratio_groups, strict=True)}
    if len(counts) > 1:
        raise ConfigError(
            f"{head} shares one prediction layer across levels, so every level needs the same "
            f"number of anchors (sizes x ratios); got {sorted(counts)}"
        )
    return size_groups, ratio_groups


def ssd_box_options(levels: int, size: int, sizes: Any, ratios: Any, *, lite: bool) -> dict:
    """Keyword arguments of DefaultBoxGenerator: ratios > 1 per level, scales from pixel sizes.

    DefaultBoxGenerator's aspect ratio is width / height and it adds both r and 1/r, so a ratio
    and its inverse give the same boxes: `ratios` may be in either meaning (the builders pass
    torchvision's height / width; a user's `--anchor-ratios 2` gives a 2:1 wide and a 1:2 tall
    box)."""
    if ratios is None:
        aspect = [[2, 3]] * levels
        if not lite and levels == 6:
            aspect = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]  # SSD300
    else:
        groups = per_level(ratios, levels, what="anchor ratios", flat_is_per_level=False) or ()
        # DefaultBoxGenerator adds r and 1/r for each r, plus two square boxes
        aspect = [sorted({round(max(r, 1 / r), 4) for r in g if r != 1.0}) for g in groups]
    options: dict[str, Any] = {"aspect_ratios": aspect}
    if sizes is None:
        options.update(min_ratio=0.2, max_ratio=0.95)
        return options
    groups = per_level(sizes, levels, what="anchor sizes", flat_is_per_level=True) or ()
    if any(len(g) != 1 for g in groups):
        raise ConfigError("ssd heads take one anchor size per feature level (pixels)")
    options["scales"] = [g[0] / size for g in groups] + [1.0]
    return options


def fitted_levels(anchor_fit: dict[str, Any], levels: int, *, one_size: bool) -> tuple[Any, Any]:
    """(sizes, ratios) per level from `anchors fit` shapes: `anchor_fit` holds "wh" (K fitted
    widths and heights) and "scale" (training size / the fit's imgsz). The K anchors are
    spread over the levels by size (`ops.anchors.anchor_generator_args`); heads that take one
    size per level and no ratios (anchor-free FCOS) get `one_size`. The ratios are
    torchvision's height / width, read off the shapes (never off a file's "ratios")."""
    from visiontool.ops.anchors import anchor_generator_args, level_sizes

    scale = float(anchor_fit.get("scale", 1.0))
    if one_size:
        return list(level_sizes(anchor_fit["wh"], levels, scale=scale)), None
    sizes, ratios = anchor_generator_args(anchor_fit["wh"], levels, scale=scale)
    return [list(s) for s in sizes], [list(r) for r in ratios]
