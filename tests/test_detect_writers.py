"""`detect`'s writer: drawing and encoding in a pool of threads changes no byte it writes."""

from __future__ import annotations

import pytest

from tests.conftest import noise_image, save
from tests.test_detect_resume import files


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from visiontool.data.synth import render_scene

    folder = tmp_path_factory.mktemp("draw-photos")
    for i in range(9):
        image, _, _ = render_scene(np.random.default_rng([11, i]), 160)
        save(Image.fromarray(image), folder / f"p{i}.{'png' if i % 3 == 0 else 'jpg'}")
    save(noise_image(64, 48), folder / "p1.png")  # a stem clash: p1_2.png
    (folder / "p9.jpg").write_bytes(b"broken")
    return folder


def test_draw_threads_write_the_same_bytes(photos, tmp_path, cli):
    outs = {}
    for threads in (1, 3):
        out = tmp_path / f"t{threads}"
        result = cli("detect", str(photos), "--model", "shapes-tinyssd", "--device", "cpu",
                     "--save-txt", "--report", "--draw-threads", str(threads),
                     "--out", str(out))  # fmt: skip
        assert result.exit_code == 1, result.output  # p9.jpg is broken, in both
        outs[threads] = out
    a, b = outs[1], outs[3]
    assert files(a) == files(b) and "p1_2.png" in files(a)
    for name in files(a):
        if name.endswith((".jpg", ".png", ".txt")):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_drawing_error_stops_the_run_with_its_message(photos, tmp_path, monkeypatch):
    from visiontool.engine.predict.detect import DetectConfig, run_detect
    from visiontool.io import writers

    def broken(result, image):
        raise RuntimeError("drawing failed here")

    monkeypatch.setattr(writers, "annotate", broken)
    config = DetectConfig(sources=[str(photos)], out=tmp_path / "o", model="shapes-tinyssd",
                          device="cpu", draw_threads=3)  # fmt: skip
    with pytest.raises(RuntimeError, match="drawing failed here"):
        run_detect(config)


def test_draw_threads_out_of_range_is_refused(photos, tmp_path, cli):
    result = cli("detect", str(photos), "--model", "shapes-tinyssd", "--draw-threads", "0",
                 "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.exit_code == 2 and "--draw-threads" in result.output
    assert not (tmp_path / "o").exists()
