"""`visiontool data show`: a grid of samples with their boxes, after an augmentation preset,
so a user can see that boxes stay on their objects.

Tiles are drawn with `visiontool.io.draw`, so a class has the colour its detections get from
`detect`, and the grid is saved atomically as a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from visiontool.data.outputs import RASTER_SUFFIXES

TILE = 256
PAD = 4  # white gap around and between the tiles
THICKNESS, FONT_SCALE = 2, 0.4  # a little bolder than io.draw's default for a 256 px tile


def render_grid(
    dataset: Any, out: str | Path, *, n: int = 16, augment: str = "none", seed: int = 0
) -> Path:
    """Draw `n` samples (picked with `seed`) after preset `augment` into one PNG at `out`."""
    import torch

    from visiontool.data.transforms import build_transforms
    from visiontool.errors import ConfigError
    from visiontool.io.draw import save_image
    from visiontool.runtime import check_budget, os_error_text

    out = Path(out)
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a folder; give the grid's file name, e.g. {out}/grid.png"
        )
    if out.suffix and out.suffix.lower() not in RASTER_SUFFIXES:
        raise ConfigError(
            f"--out {out}: cannot write a {out.suffix!r} image; give a file name ending in "
            f"{', '.join(RASTER_SUFFIXES)}"
        )
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    count = min(n, len(dataset))
    check_budget(2 * 3 * (TILE + PAD) ** 2 * count, f"--n {n} ({count} tiles)")
    indices = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    dataset.transforms = build_transforms(augment, train=augment != "none", imgsz=None)
    tiles = [_tile(dataset, i) for i in indices]
    try:
        return save_image(tile_grid(tiles, max(1, math.ceil(math.sqrt(count)))), out)
    except OSError as exc:
        raise ConfigError(os_error_text(exc, out, "cannot write")) from exc


def _tile(dataset: Any, index: int) -> Any:
    """Sample `index` resized to fit TILE x TILE, drawn, on a white square (BGR array)."""
    import numpy as np
    import torch
    from torchvision.transforms import v2

    from visiontool.io.draw import color, draw_boxes, draw_tags, to_bgr_array

    image, target = dataset[index]
    height, width = image.shape[-2:]
    scale = TILE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if isinstance(target, dict):
        image, boxes = v2.Resize(size, antialias=True)(image, target["boxes"])
        bgr = to_bgr_array(v2.ToDtype(torch.uint8, scale=True)(image))
        labels = target["labels"].tolist()
        draw_boxes(
            bgr,
            boxes.as_subclass(torch.Tensor).tolist(),
            [color(k) for k in labels],
            [dataset.classes[k] for k in labels],
            thickness=THICKNESS,
            font_scale=FONT_SCALE,
        )
    else:
        bgr = to_bgr_array(
            v2.ToDtype(torch.uint8, scale=True)(v2.Resize(size, antialias=True)(image))
        )
        tags = [(dataset.classes[k], k) for k in _class_ids(target)]
        draw_tags(bgr, tags, thickness=THICKNESS, font_scale=FONT_SCALE)
    canvas = np.full((TILE, TILE, 3), 255, np.uint8)
    canvas[: bgr.shape[0], : bgr.shape[1]] = bgr
    return canvas


def _class_ids(target: Any) -> list[int]:
    """The class ids of a classification target: one index, or a multi-hot vector."""
    if hasattr(target, "nonzero") and getattr(target, "ndim", 0) == 1:
        return [int(k) for k in target.nonzero().flatten()]
    return [int(target)]


def tile_grid(tiles: list[Any], per_row: int) -> Any:
    """Tiles in rows of `per_row`, PAD white pixels around and between them (torchvision's
    make_grid layout)."""
    import numpy as np

    columns = max(1, min(per_row, len(tiles)))
    rows = max(1, math.ceil(len(tiles) / columns))
    step = TILE + PAD
    grid = np.full((rows * step + PAD, columns * step + PAD, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = PAD + (i // columns) * step, PAD + (i % columns) * step
        grid[y : y + TILE, x : x + TILE] = tile
    return grid
