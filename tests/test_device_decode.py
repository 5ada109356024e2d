"""JPEGs decoded in batches on the model's device give the CPU decoder's pixels and errors.

On a CPU machine the "device" is the CPU itself (`--decode device`), which runs the same code
path the GPU does: read in the workers, decoded many at once in the main process, turned by
their EXIF orientation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import noise_image, save
from visiontool.errors import ImageError
from visiontool.io.device_decode import decode_on_device, read_for_device
from visiontool.io.images import read_image


def exif_jpeg(path, orientation: int, size=(40, 24), mode="RGB"):
    """An asymmetric picture (a bright corner) saved with EXIF `orientation`."""
    image = noise_image(*size, seed=orientation).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(image, path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decode_turns_each_exif_orientation_as_the_cpu_path(tmp_path, orientation):
    path = exif_jpeg(tmp_path / "o.jpg", orientation)
    encoded = read_for_device(path, None)
    assert encoded is not None and encoded.orientation == orientation
    (image,) = decode_on_device([encoded], "cpu")
    assert torch.equal(image, read_image(path))


def test_only_plain_jpegs_take_the_device_path(tmp_path):
    assert read_for_device(save(noise_image(), tmp_path / "a.png"), None) is None
    cmyk = save(noise_image().convert("CMYK"), tmp_path / "c.jpg")
    assert read_for_device(cmyk, None) is None  # CMYK: the CPU converts it
    gray = save(noise_image().convert("L"), tmp_path / "g.jpg")
    (image,) = decode_on_device([read_for_device(gray, None)], "cpu")
    assert torch.equal(image, read_image(gray))  # grayscale becomes RGB alike
    with pytest.raises(ImageError, match="max-pixels"):
        read_for_device(save(noise_image(), tmp_path / "big.jpg"), 100)


def test_a_jpeg_whose_header_claims_a_huge_size_is_one_failed_image(tmp_path):
    """Pillow refuses a header over ~179 M pixels with DecompressionBombError, which is not
    an OSError: it must not escape the device path's reader (it stopped the whole run)."""
    from visiontool.engine.predict.stream import decode_item

    data = bytearray((save(noise_image(32, 24), tmp_path / "small.jpg")).read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = (15000).to_bytes(2, "big") * 2
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(bytes(data))
    assert read_for_device(huge, None) is None  # the CPU decoder names the fault
    item = decode_item(0, str(huge), huge.name, None, for_device=True)
    assert item.image is None and "image too large" in item.error


def test_a_group_with_a_corrupt_jpeg_decodes_the_rest_and_names_the_fault(tmp_path):
    from visiontool.engine.predict.stream import decode_item, finish_on_device

    good = [save(noise_image(seed=i), tmp_path / f"{i}.jpg") for i in range(3)]
    data = (tmp_path / "0.jpg").read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[: len(data) // 3])  # a valid header, then truncated
    paths = [good[0], bad, good[1], good[2]]
    read = [decode_item(i, str(p), p.name, None, for_device=True) for i, p in enumerate(paths)]
    assert all(item.encoded is not None for item in read)
    items = list(finish_on_device(iter(read), "cpu", None, group=8))
    assert [item.path for item in items] == [str(p) for p in paths]
    assert items[1].image is None and items[1].error == decode_item(1, str(bad), "b", None).error
    for item, path in zip(items, paths, strict=True):
        if path != bad:
            assert torch.equal(item.image, read_image(path)) and item.error is None


def test_detect_writes_the_same_with_device_decode(tmp_path, cli, monkeypatch):
    from tests.test_detect_resume import files
    from visiontool.io import device_decode

    decoded = []
    real = device_decode.decode_on_device

    def counting(jpegs, device):
        decoded.append(len(jpegs))
        return real(jpegs, device)

    monkeypatch.setattr(device_decode, "decode_on_device", counting)

    folder = tmp_path / "in"
    for k in (1, 3, 6, 8):
        exif_jpeg(folder / f"rot{k}.jpg", k, size=(96, 64))
    save(noise_image(80, 60).convert("L"), folder / "gray.jpg")
    save(noise_image(80, 60).convert("CMYK"), folder / "cmyk.jpg")
    save(noise_image(80, 60), folder / "plain.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing more")
    outs = {}
    for mode in ("cpu", "device"):
        out = tmp_path / mode
        result = cli("detect", str(folder), "--model", "shapes-tinyssd", "--device", "cpu",
                     "--decode", mode, "--conf", "0.05", "--out", str(out))  # fmt: skip
        assert result.exit_code == 1, result.output  # broken.jpg in both
        outs[mode] = out
        # cpu: never; device: the four rotated and the gray JPEG in one call, the broken
        # one's group again one by one (it falls back to the CPU, which names the fault)
        assert (sum(decoded) > 0) == (mode == "device"), decoded
    rows = {m: [json.loads(line) for line in (o / "predictions.jsonl").open()]
            for m, o in outs.items()}  # fmt: skip
    for row in (*rows["cpu"], *rows["device"]):
        row.pop("time_ms")
    assert rows["cpu"] == rows["device"]
    assert files(outs["cpu"]) == files(outs["device"])
    for name in files(outs["cpu"]):
        if name.endswith((".jpg", ".png")):
            a = np.asarray(Image.open(outs["cpu"] / name))
            assert np.array_equal(a, np.asarray(Image.open(outs["device"] / name))), name


def test_decode_option_is_checked(tmp_path, cli):
    save(noise_image(), tmp_path / "a.jpg")
    result = cli("detect", str(tmp_path / "a.jpg"), "--model", "shapes-tinyssd",
                 "--decode", "gpu", "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.exit_code == 2 and "--decode must be auto, cpu or device" in result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (nvjpeg)")
def test_nvjpeg_decodes_a_batch_as_the_cpu_does(tmp_path):
    paths = [exif_jpeg(tmp_path / f"{k}.jpg", k, size=(64, 48)) for k in range(1, 9)]
    images = decode_on_device([read_for_device(p, None) for p in paths], "cuda")
    for path, image in zip(paths, images, strict=True):
        assert image.device.type == "cuda"
        cpu = read_image(path)
        assert image.shape == cpu.shape
        # nvjpeg's IDCT may differ from libjpeg-turbo's by a level or two
        assert (image.cpu().int() - cpu.int()).abs().float().mean() < 1.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (nvjpeg)")
def test_nvjpeg_does_not_pass_off_a_truncated_jpeg_as_decoded(tmp_path):
    """libjpeg raises on a cut file; nvjpeg's batched decoder must too (or the group falls
    back to the CPU, which names the fault), not return a half-grey picture."""
    from visiontool.engine.predict.stream import decode_item, finish_on_device

    good = save(noise_image(seed=1), tmp_path / "good.jpg")
    data = good.read_bytes()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(data[: len(data) // 3])
    read = [
        decode_item(i, str(p), p.name, None, for_device=True) for i, p in enumerate([good, bad])
    ]
    items = list(finish_on_device(iter(read), "cuda", None, group=8))
    assert items[0].error is None and items[0].image is not None
    assert items[1].image is None and items[1].error == decode_item(1, str(bad), "b", None).error
