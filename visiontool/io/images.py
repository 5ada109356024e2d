"""Read any image a user throws at us as an RGB uint8 tensor (3, H, W), or say why not.

JPEG, the common case, goes through torchvision's libjpeg-turbo decoder with EXIF orientation
applied. Everything else (PNG, BMP, WebP, TIFF, GIF, odd modes) goes through Pillow, where we
control the conversion: EXIF transpose, 16-bit scaled to 8-bit, palette and alpha composited on
white, CMYK and grayscale converted to RGB. Every failure becomes an `ImageError` whose message
is a short reason fit for a results file.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import Any

from visiontool.errors import ImageError

DEFAULT_MAX_PIXELS = 100_000_000
JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".dib", ".ppm"}
)


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Any:
    """Decode `path` to a uint8 RGB tensor of shape (3, H, W) as displayed.

    The tensor is a (3, H, W) view of pixel-interleaved (H, W, 3) memory, the layout decoders
    produce: `image.permute(1, 2, 0)` is then a free, contiguous HWC array for drawing and
    encoding, and the model side reads either layout.
    """
    data = _read_bytes(Path(path))
    return decode_image_bytes(data, max_pixels=max_pixels)


def decode_image_bytes(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Any:
    """Decode encoded image bytes; see `read_image`."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    if data.startswith(JPEG_MAGIC):
        return _decode_jpeg(data, max_pixels)
    return _decode_with_pillow(data, max_pixels)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; only regular files are read. The file is opened non-blocking and
    checked before reading, so a FIFO, socket or device (`/dev/zero`) is refused at once
    rather than hanging or reading forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise ImageError("file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError("is a directory") from exc
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO opened without a writer
            raise ImageError("not a regular file (socket or FIFO); skipped") from exc
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(mode):
            raise ImageError(f"not a regular file ({special_file_kind(mode)}); skipped")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise ImageError(f"cannot read file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def special_file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its `st_mode`."""
    for test, kind in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return kind
    return "special file"


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if max_pixels and width * height > max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} = {width * height:,} pixels "
            f"> --max-pixels {max_pixels:,}"
        )


def _decode_jpeg(data: bytes, max_pixels: int | None) -> Any:
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            _check_size(*header.size, max_pixels)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"corrupt JPEG ({_short(exc)})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large ({_short(exc)})") from exc
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = decode_jpeg(raw, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as exc:
        reason = _short(exc)
        if "truncated" in reason or "incomplete" in reason:
            raise ImageError("truncated JPEG (file ends before the image data)") from exc
        raise ImageError(f"corrupt JPEG ({reason})") from exc
    return (
        image
        if image.permute(1, 2, 0).is_contiguous()
        else image.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    )


def _decode_with_pillow(data: bytes, max_pixels: int | None) -> Any:
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            _check_size(*opened.size, max_pixels)
            opened.seek(0)  # first frame of animations
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            rgb = to_rgb(image)
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large ({_short(exc)})") from exc
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = _short(exc)
        if "truncated" in reason:
            raise ImageError("truncated image (file ends before the image data)") from exc
        raise ImageError(f"corrupt image ({reason})") from exc
    import numpy as np

    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_rgb(image: Any) -> Any:
    """Convert a Pillow image of any mode to 8-bit RGB the way a viewer would show it."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        scaled = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = 1.0 if array.max() <= 1.0 else 255.0
        scaled = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed (after EXIF rotation), from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            width, height = opened.size
            orientation = opened.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"not a readable image ({_short(exc)})") from exc
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _short(exc: BaseException) -> str:
    """The useful tail of a decoder's message, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if ".cpp:" in text:
        text = text.rsplit(", ", 1)[-1]
    return text[:200]
