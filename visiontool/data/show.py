"""`visiontool data show`: a grid of samples with their boxes, after an augmentation preset,
so a user can see that boxes stay on their objects."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TILE = 256


def palette(k: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per class id."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_grid(
    dataset: Any, out: str | Path, *, n: int = 16, augment: str = "none", seed: int = 0
) -> Path:
    """Draw `n` samples (picked with `seed`) after preset `augment` into one PNG at `out`."""
    import torch
    from PIL import Image
    from torchvision.utils import make_grid

    from visiontool.data.transforms import build_transforms
    from visiontool.io.atomic import atomic_write

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    count = min(n, len(dataset))
    indices = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    dataset.transforms = build_transforms(augment, train=augment != "none", imgsz=None)
    tiles = [_tile(dataset, i) for i in indices]
    grid = make_grid(tiles, nrow=max(1, math.ceil(math.sqrt(count))), padding=4, pad_value=255)
    image = Image.fromarray(grid.permute(1, 2, 0).numpy())
    out = Path(out)
    atomic_write(out, lambda handle: image.save(handle, format="PNG"))
    return out


def _tile(dataset: Any, index: int) -> Any:
    import torch
    from torchvision.transforms import v2
    from torchvision.utils import draw_bounding_boxes

    image, target = dataset[index]
    height, width = image.shape[-2:]
    scale = TILE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if isinstance(target, dict):
        image, boxes = v2.Resize(size, antialias=True)(image, target["boxes"])
        image = v2.ToDtype(torch.uint8, scale=True)(image)
        labels = target["labels"].tolist()
        if len(labels):
            image = draw_bounding_boxes(
                image,
                boxes.as_subclass(torch.Tensor),
                labels=[dataset.classes[k] for k in labels],
                colors=[palette(k) for k in labels],
                width=2,
            )
    else:
        image = v2.ToDtype(torch.uint8, scale=True)(v2.Resize(size, antialias=True)(image))
        image = _caption(image, _class_text(dataset, target))
    canvas = torch.full((3, TILE, TILE), 255, dtype=torch.uint8)
    canvas[:, : image.shape[-2], : image.shape[-1]] = image
    return canvas


def _class_text(dataset: Any, target: Any) -> str:
    if hasattr(target, "nonzero") and getattr(target, "ndim", 0) == 1:
        return " ".join(dataset.classes[int(k)] for k in target.nonzero().flatten())
    return dataset.classes[int(target)]


def _caption(image: Any, text: str) -> Any:
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, pil.width, 14), fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
