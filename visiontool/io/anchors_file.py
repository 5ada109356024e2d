"""anchors.json: the file `visiontool anchors fit` writes and `train --anchors` reads.

The one place that knows the schema (docs/anchors.md): `anchors_document` builds it,
`write_anchors_json` writes it atomically, `read_anchors_json` loads and checks it, and
`anchors_for_levels` turns it into per-level sizes and ratios for a model's feature levels.

    {"num": K, "imgsz": 640, "wh": [[w, h], ...], "sizes": [[s], ...], "ratios": [[r], ...],
     ...statistics and provenance...}

`wh` holds K anchor widths and heights in pixels at `imgsz`, sorted by area; `sizes` and
`ratios` the same anchors as size = sqrt(w*h) and ratio = w/h (width / height, 2 = wide, as
every visiontool ratio), one level per anchor. They are for people: readers (`train
--anchors`, `anchors label --anchors`, `anchors_for_levels`) use `wh` only. Files written
before ratios meant width / height hold h/w there; their `wh` reads the same.
`anchors_for_levels` gives torchvision's `AnchorGenerator` arguments, whose aspect ratio is
height / width.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.errors import DataError

SCHEMA_KEYS = ("num", "imgsz", "wh", "sizes", "ratios")


def anchors_document(wh: Any, *, imgsz: int, **fields: Any) -> dict[str, Any]:
    """The anchors.json document for anchor shapes `wh` (K, 2) in pixels at `imgsz`: the schema
    keys (shapes sorted by area, rounded to 4 decimals) followed by `fields` as given."""
    from visiontool.ops.anchors import sort_by_area

    wh = sort_by_area(wh)
    return {
        "num": len(wh),
        "imgsz": int(imgsz),
        "wh": _round(wh.tolist()),
        "sizes": [[_round(math.sqrt(w * h))] for w, h in wh],
        "ratios": [[_round(w / h)] for w, h in wh],  # width / height
        **fields,
    }


def write_anchors_json(path: str | Path, document: dict[str, Any]) -> Path:
    """Write an anchors.json document (from `anchors_document`) atomically; returns the path."""
    from visiontool.io.atomic import write_json

    missing = [key for key in SCHEMA_KEYS if key not in document]
    if missing:
        raise ValueError(f"anchors.json document lacks {', '.join(missing)}")
    return write_json(path, document)


def read_anchors_json(path: str | Path) -> dict[str, Any]:
    """Load and check an anchors.json; a one-line `DataError` naming the file and the problem
    otherwise (missing file, not JSON, missing keys, `wh` not `num` positive [w, h] pairs)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    missing = [key for key in SCHEMA_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise DataError(
            f"{path}: missing {', '.join(missing)}; write it with `visiontool anchors fit`"
        )
    try:
        wh = np.asarray(data["wh"], dtype=np.float64)
    except (TypeError, ValueError):
        wh = np.zeros((0, 0))
    if (
        wh.ndim != 2
        or wh.shape[1] != 2
        or len(wh) != data["num"]
        or len(wh) == 0
        or not np.isfinite(wh).all()
        or (wh <= 0).any()
    ):
        raise DataError(f"{path}: 'wh' must be {data['num']} positive [w, h] pairs")
    imgsz = data["imgsz"]
    if (
        isinstance(imgsz, bool)
        or not isinstance(imgsz, (int, float))
        or not math.isfinite(imgsz)
        or imgsz <= 0
    ):
        raise DataError(f"{path}: 'imgsz' must be a positive number, got {data['imgsz']!r}")
    return data


def anchors_for_levels(
    spec: dict[str, Any] | str | Path,
    num_levels: int,
    *,
    imgsz: float | None = None,
    sizes_only: bool = False,
) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...] | None]:
    """Per-level (sizes, aspect_ratios) for a model with `num_levels` feature maps, from an
    anchors.json (a path, read with `read_anchors_json`, or its loaded dict).

    Any K anchors work for any number of levels: see `visiontool.ops.anchors.level_groups`.
    `imgsz`: the image size the model sees, to scale the anchors from the file's `imgsz` (None
    keeps them as fitted). Default: the torchvision `AnchorGenerator` form, one size per level
    and that level's m aspect ratios, height / width as torchvision takes them (the inverse of
    the file's `ratios`; m the same on every level). With `sizes_only`: `((s1,), (s2,),
    ...)` one size per level and `None` for ratios (anchor-free FCOS, heads taking one size per
    level).
    """
    from visiontool.ops.anchors import anchor_generator_args, level_sizes

    if not isinstance(spec, dict):
        spec = read_anchors_json(spec)
    scale = 1.0 if imgsz is None else float(imgsz) / float(spec["imgsz"])
    if sizes_only:
        return tuple((s,) for s in level_sizes(spec["wh"], num_levels, scale=scale)), None
    return anchor_generator_args(spec["wh"], num_levels, scale=scale)


def _round(value: Any, digits: int = 4) -> Any:
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return round(float(value), digits)
