"""JPEGs decoded many at once on the model's device (nvjpeg on a GPU), not by CPU workers.

On a GPU machine the CPU decoders were a third of `detect`'s time per 1080p image, and what they
produce crosses to the GPU as 6 MB of pixels instead of ~0.5 MB of JPEG. Here the workers only
read the file and its header (`read_for_device`); the main process then decodes a run of such
files in one `torchvision.io.decode_jpeg(list, device=...)` call (`decode_on_device`) and turns
each the way its EXIF orientation says (`orient`), so the pixels equal the CPU path's.

Only plain JPEGs take this path: RGB or grayscale, within --max-pixels. CMYK and every other
format, and any file the device decoder refuses, are decoded on the CPU as before, with the
same error messages.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontool.io.images import JPEG_MAGIC, _check_size, _read_bytes

ORIENTATION_TAG = 0x0112


@dataclass
class EncodedJpeg:
    """A JPEG read but not decoded yet."""

    data: Any  # the file's bytes, a uint8 1-D CPU tensor (what decode_jpeg takes)
    orientation: int = 1  # EXIF orientation, 1 (as stored) .. 8


def read_for_device(path: str | Path, max_pixels: int | None) -> EncodedJpeg | None:
    """The file's bytes when the device decoder can take it; None: decode it on the CPU. A
    JPEG over --max-pixels raises the usual ImageError (nothing is decoded)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    data = _read_bytes(Path(path))
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        with Image.open(io.BytesIO(data)) as header:  # the header only
            mode, size = header.mode, header.size
            orientation = int(header.getexif().get(ORIENTATION_TAG, 1) or 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None  # the CPU decoder says what is wrong with it (too large included)
    if mode not in ("RGB", "L") or not 1 <= orientation <= 8:
        return None
    _check_size(*size, max_pixels)
    return EncodedJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), orientation)


def decode_on_device(jpegs: list[EncodedJpeg], device: Any) -> list[Any]:
    """uint8 RGB (3, H, W) tensors on `device`, as displayed; one decoder call for the list.
    Raises RuntimeError (the decoder's) when any of them fails: decode those one by one."""
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg([j.data for j in jpegs], mode=ImageReadMode.RGB, device=device)
    return [orient(image, j.orientation) for image, j in zip(images, jpegs, strict=True)]


def orient(image: Any, orientation: int) -> Any:
    """Apply EXIF orientation 1-8 to a (C, H, W) tensor, as `PIL.ImageOps.exif_transpose`."""
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image
