"""Image loading: every mode becomes correct 8-bit RGB, EXIF rotation applies, bad files say why."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import jpeg_bytes, noise_image, save
from visiontool.errors import ImageError
from visiontool.io.images import decode_image_bytes, image_size, read_image


def as_hwc(tensor) -> np.ndarray:
    assert tensor.dtype.is_floating_point is False and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def test_jpeg_matches_pillow_decode(tmp_path):
    path = save(noise_image(64, 48), tmp_path / "a.jpg", quality=95)
    ours = as_hwc(read_image(path)).astype(int)
    ref = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert ours.shape == (48, 64, 3)
    assert np.abs(ours - ref).max() <= 2  # libjpeg-turbo vs Pillow IDCT rounding


def test_exif_orientation_rotates_jpeg(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # left quarter blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    path.write_bytes(jpeg_bytes(image, exif=exif.tobytes(), quality=100))
    pixels = as_hwc(read_image(path))
    assert pixels.shape[:2] == (40, 20)  # height 40, width 20 after rotation
    assert pixels[2, 10, 2] > 200 and pixels[2, 10, 0] < 60  # blue moved to the top
    assert image_size(path) == (20, 40)


def test_exif_orientation_rotates_png(tmp_path):
    image = Image.new("RGB", (30, 10), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 8
    path = save(image, tmp_path / "rot.png", exif=exif.tobytes())
    assert read_image(path).shape == (3, 30, 10)


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),  # fully transparent -> white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("LA", (0, 128), (128, 128, 128)),  # half-transparent black on white
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),
        ("CMYK", (0, 255, 0, 0), (255, 0, 255)),
    ],
)
def test_odd_modes_become_rgb(tmp_path, mode, value, expected):
    image = Image.new(mode, (8, 6), value)
    suffix = ".tiff" if mode in ("CMYK",) else ".png"
    path = save(image, tmp_path / f"img{suffix}")
    pixels = as_hwc(read_image(path))
    assert pixels.shape == (6, 8, 3)
    assert np.abs(pixels[3, 4].astype(int) - np.array(expected)).max() <= 1


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    image.info["transparency"] = 0
    path = save(image, tmp_path / "pal.png", transparency=0)
    assert tuple(as_hwc(read_image(path))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), tmp_path / "c.jpg", quality=100)
    assert np.abs(as_hwc(read_image(path))[4, 4].astype(int) - [255, 0, 255]).max() <= 3


def test_gif_first_frame_and_bmp_webp(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert read_image(gif).shape == (3, 10, 10)
    for suffix in (".bmp", ".webp", ".tif"):
        assert read_image(save(noise_image(12, 9), tmp_path / f"x{suffix}")).shape == (3, 9, 12)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (b"\xff\xd8\xff" + b"\x00garbage" * 10, "corrupt JPEG"),
    ],
)
def test_bad_bytes_give_reasons(payload, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image_bytes(payload)


def test_truncated_files(tmp_path):
    data = jpeg_bytes(noise_image(64, 64))
    with pytest.raises(ImageError, match="truncated"):
        decode_image_bytes(data[: len(data) // 2])
    png = save(noise_image(64, 64), tmp_path / "t.png").read_bytes()
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image_bytes(png[: len(png) // 2])


def test_max_pixels_rejects_huge_images_from_header():
    data = jpeg_bytes(Image.new("RGB", (200, 100)))
    with pytest.raises(ImageError, match="too large: 200x100"):
        decode_image_bytes(data, max_pixels=10_000)
    assert decode_image_bytes(data, max_pixels=20_000).shape == (3, 100, 200)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)
