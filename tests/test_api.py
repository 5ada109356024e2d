"""The Python API: `visiontool.predict` streams results, and every CLI action is a call."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visiontool
from tests.conftest import noise_image, save

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODEL = "shapes-frcnn"


@pytest.fixture(scope="module")
def shapes():
    """The shipped shapes detector, loaded once and reused (`predict(model=LoadedModel)`)."""
    return visiontool.load_model(MODEL, device="cpu")


def visiontool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("visiontool")]


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "time_ms"}


def test_every_export_resolves_and_import_alone_does_not_load_torch():
    code = "import sys, visiontool; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    from visiontool.engine.evaluate.run import EvalConfig, run_eval
    from visiontool.engine.predict.detect import DetectConfig, run_detect
    from visiontool.engine.train.trainer import TrainConfig, run_train
    from visiontool.results import Detection, ImageResult

    expected = {
        "detect": run_detect, "DetectConfig": DetectConfig, "train": run_train,
        "TrainConfig": TrainConfig, "evaluate": run_eval, "EvalConfig": EvalConfig,
        "ImageResult": ImageResult, "Detection": Detection,
    }  # fmt: skip
    for name, target in expected.items():
        assert getattr(visiontool, name) is target, name
    for name in visiontool.__all__:
        assert getattr(visiontool, name) is not None, name
    assert callable(visiontool.predict) and callable(visiontool.load_model)
    assert set(dir(visiontool)) >= set(expected) | {"predict", "load_model", "read_image"}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        visiontool.nope  # noqa: B018


def test_predict_takes_detect_defaults():
    """One option, one default, whether it comes through `predict` or `DetectConfig`."""
    defaults = {f.name: f.default for f in dataclasses.fields(visiontool.DetectConfig)}
    params = inspect.signature(visiontool.predict).parameters
    shared = set(defaults) & set(params) - {"sources"}
    assert len(shared) >= 15
    assert {name: params[name].default for name in shared} == {n: defaults[n] for n in shared}


@pytest.mark.parametrize("config", ["DetectConfig", "TrainConfig", "EvalConfig"])
def test_every_config_field_has_a_row_in_the_api_docs(config):
    section = (ROOT / "docs" / "api.md").read_text().split(f"### {config}\n", 1)[1]
    documented = re.findall(r"^\| `(\w+)` \|", section.split("\n## ", 1)[0], re.MULTILINE)
    assert documented == [f.name for f in dataclasses.fields(getattr(visiontool, config))]


def test_predict_gives_what_detect_writes(tmp_path):
    sources = [str(EXAMPLES / name) for name in ("shapes_256_0.jpg", "shapes_480_1.jpg")]
    config = visiontool.DetectConfig(
        sources=sources, model=MODEL, device="cpu", out=tmp_path / "run", save_img=False,
        workers=0, conf=0.3,
    )  # fmt: skip
    visiontool.detect(config)
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    written = [comparable(json.loads(line)) for line in lines]
    streamed = list(visiontool.predict(sources, model=MODEL, device="cpu", workers=0, conf=0.3))
    assert all(isinstance(r, visiontool.ImageResult) for r in streamed)
    assert [comparable(r.to_dict()) for r in streamed] == written
    assert written[0]["detections"] and written[1]["detections"]
    assert isinstance(streamed[0].detections[0], visiontool.Detection)
    assert set(streamed[0].speed) == {"decode", "inference"}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "args.json", "predictions.jsonl", "summary.json"]  # fmt: skip


def test_results_stream_out_before_the_inputs_are_read(shapes):
    """The first result arrives while most of a long input iterator is still unread."""
    pulled = []

    def frames():
        for i in range(40):
            pulled.append(i)
            yield np.asarray(noise_image(96, 64, seed=i))

    results = visiontool.predict(frames(), model=shapes, workers=0)
    assert pulled == []  # nothing runs before the first next()
    with contextlib.closing(results):
        first = next(results)
        assert first.ok and (first.width, first.height) == (96, 64)
        assert first.image == "<image 0>"
        assert len(pulled) < 20
    assert len(pulled) < 20  # closing stopped the decoder too


def test_closing_early_stops_decoding_and_model_threads(shapes, monkeypatch):
    from visiontool.engine.predict.predictor import Predictor

    calls = []
    real = Predictor.predict

    def counting(self, images):
        calls.append(len(images))
        return real(self, images)

    monkeypatch.setattr(Predictor, "predict", counting)
    images = [np.asarray(noise_image(80, 60, seed=i)) for i in range(10)]
    results = visiontool.predict(images, model=shapes, workers=0, inflight=2)
    taken = []
    for result in results:
        taken.append(result)
        if len(taken) == 2:
            break
    results.close()
    assert len(taken) == 2 and all(r.ok for r in taken)
    assert visiontool_threads() == []
    assert sum(calls) < 10


def test_bad_inputs_are_yielded_with_an_error_in_their_place(shapes, tmp_path):
    good = save(noise_image(seed=1), tmp_path / "good.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    inputs = [good, empty, np.zeros((10, 10, 3), np.float32), text, tmp_path / "gone.jpg",
              np.asarray(noise_image(seed=2))]  # fmt: skip
    results = list(visiontool.predict(iter(inputs), model=shapes, workers=0))
    assert [r.ok for r in results] == [True, False, False, False, False, True]
    assert "empty" in results[1].error and Path(results[1].image) == empty
    assert "uint8" in results[2].error and results[2].image == "<image 2>"
    assert "not an image" in results[3].error
    assert "not found" in results[4].error
    # a folder of files, as `detect` takes it: failures in place, nothing raised
    listed = list(visiontool.predict(str(tmp_path), model=shapes, workers=0))
    assert [(Path(r.image).name, r.ok) for r in listed] == [
        ("empty.jpg", False), ("good.jpg", True), ("text.png", False)]  # fmt: skip


def test_a_failing_input_iterator_raises_in_the_caller(shapes):
    def frames():
        yield np.asarray(noise_image(seed=0))
        raise ValueError("camera unplugged")

    results = visiontool.predict(frames(), model=shapes, workers=0)
    with pytest.raises(ValueError, match="camera unplugged"):
        list(results)  # raised once the pipeline reads that far (it reads a few ahead)
    assert visiontool_threads() == []


def test_decoded_images_give_the_results_of_their_file(shapes, tmp_path):
    """PIL images, numpy HWC arrays and torch CHW tensors are predicted like the file."""
    png = tmp_path / "shapes.png"
    Image.open(EXAMPLES / "shapes_256_1.jpg").save(png)
    tensor = visiontool.read_image(png)
    inputs = [png, Image.open(png), tensor.permute(1, 2, 0).numpy(), tensor, tensor[0].numpy()]
    results = list(visiontool.predict(inputs, model=shapes, workers=0))
    assert all(r.ok for r in results) and results[0].detections
    boxes = [[d.to_dict() for d in r.detections] for r in results]
    assert boxes[1:4] == [boxes[0]] * 3
    assert (results[4].width, results[4].height) == (256, 256)  # grayscale: 3 equal channels
    (single,) = visiontool.predict(tensor, model=shapes, workers=0)  # one image, not its rows
    assert [d.to_dict() for d in single.detections] == boxes[0]


def test_setup_errors_raise_at_the_call(tmp_path):
    from visiontool.errors import ConfigError, DataError, UnknownName

    with pytest.raises(DataError, match="no such file"):
        visiontool.predict(str(tmp_path / "nope.jpg"), model=MODEL)
    with pytest.raises(ConfigError, match="--conf"):
        visiontool.predict([np.zeros((8, 8, 3), np.uint8)], model=MODEL, conf=2)
    with pytest.raises(UnknownName):
        visiontool.predict([np.zeros((8, 8, 3), np.uint8)], model="shapes-frcn")
