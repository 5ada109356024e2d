"""`visiontool export` (ONNX, TorchScript) with its check against the eager model, and
`detect --weights model.onnx` through onnxruntime giving what the eager model gives."""

from __future__ import annotations

import builtins
import json

import pytest

from visiontool.data.synth import synth_detection

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    synth_detection(root / "data", n=4, imgsz=256, seed=11, val_fraction=0.0)
    return root


def detections(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_onnx_detector_runs_in_detect_like_the_eager_model(cli, shapes):
    onnx_file = shapes / "tiny.onnx"
    made = cli("export", "--model", "shapes-tinyssd", "--out", onnx_file, "--json")
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout.splitlines()[0])
    assert report["check"]["max_box_px"] <= 1.0 and report["check"]["max_score_diff"] <= 1e-3
    assert report["check"]["detections"] > 0  # the check compared real detections
    images = shapes / "data" / "images" / "train"
    eager = cli("detect", images, "--model", "shapes-tinyssd", "--workers", "0",
                "--out", shapes / "eager")  # fmt: skip
    exported = cli("detect", images, "--weights", onnx_file, "--workers", "0",
                   "--out", shapes / "onnx")  # fmt: skip
    assert eager.exit_code == 0 and exported.exit_code == 0, exported.output
    for a, b in zip(detections(shapes / "eager"), detections(shapes / "onnx"), strict=True):
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert max(abs(x - y) for x, y in zip(da["box"], db["box"], strict=True)) <= 1.0
            assert abs(da["score"] - db["score"]) <= 1e-3
    assert any(line["detections"] for line in detections(shapes / "onnx"))


def test_onnx_and_torchscript_classifier(cli, shapes, tmp_path):
    for fmt, name in (("onnx", "lenet.onnx"), ("torchscript", "lenet.torchscript")):
        made = cli("export", "--model", "digits-lenet", "--format", fmt, "--out", tmp_path / name)
        assert made.exit_code == 0, made.output
        assert (tmp_path / name).stat().st_size > 10_000
        assert "logits within" in made.output
    images = shapes / "data" / "images" / "train"
    eager = cli("detect", images, "--model", "digits-lenet", "--workers", "0", "--json",
                "--out", tmp_path / "e")  # fmt: skip
    exported = cli("detect", images, "--weights", tmp_path / "lenet.onnx", "--workers", "0",
                   "--json", "--out", tmp_path / "o")  # fmt: skip
    assert eager.exit_code == 0 and exported.exit_code == 0, exported.output
    for a, b in zip(detections(tmp_path / "e"), detections(tmp_path / "o"), strict=True):
        assert [c["label"] for c in a["classes"]] == [c["label"] for c in b["classes"]]
        assert a["classes"][0]["score"] == pytest.approx(b["classes"][0]["score"], abs=1e-4)


def test_without_onnxruntime_the_error_names_the_extra(cli, shapes, monkeypatch):
    onnx_file = shapes / "tiny.onnx"
    if not onnx_file.exists():
        assert cli("export", "--model", "shapes-tinyssd", "--out", onnx_file).exit_code == 0
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    result = cli("detect", shapes / "data" / "images" / "train", "--weights", onnx_file,
                 "--out", shapes / "none")  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "pip install 'visiontool[onnx]'" in result.output
    assert "Traceback" not in result.output


def test_half_export_runs_in_detect(cli, shapes, tmp_path):
    half = tmp_path / "half.onnx"
    made = cli("export", "--model", "shapes-tinyssd", "--half", "--out", half, "--json")
    assert made.exit_code == 0, made.output
    check = json.loads(made.stdout.splitlines()[0])["check"]
    assert check["detections"] > 0 and check["max_box_px"] <= 1.0  # fp16 eager vs fp16 onnx
    images = shapes / "data" / "images" / "train"
    eager = cli("detect", images, "--model", "shapes-tinyssd", "--workers", "0",
                "--out", tmp_path / "e")  # fmt: skip
    exported = cli("detect", images, "--weights", half, "--workers", "0", "--out", tmp_path / "h")
    assert eager.exit_code == 0 and exported.exit_code == 0, exported.output
    for a, b in zip(detections(tmp_path / "e"), detections(tmp_path / "h"), strict=True):
        strong_a = [d["label"] for d in a["detections"] if d["score"] > 0.5]
        strong_b = [d["label"] for d in b["detections"] if d["score"] > 0.5]
        assert strong_a == strong_b  # fp16 against the fp32 model: the confident ones agree


def test_a_corrupt_onnx_file_is_one_line_exit_3(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    image = tmp_path / "a.png"
    from tests.conftest import noise_image, save

    save(noise_image(64, 64), image)
    result = cli("detect", image, "--weights", bad, "--out", tmp_path / "o")
    assert result.exit_code == 3, result.output
    assert "is not an ONNX model onnxruntime can run" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "shapes-tinyssd", "--format", "tflite"], "--format must be one of"),
        ([], "pass --model NAME or --weights CHECKPOINT"),
        (["--model", "shapes-tinyssd", "--imgsz", "8"], "--imgsz must be >= 32"),
    ],
)
def test_bad_export_options_are_one_line_exit_2(cli, tmp_path, args, message):
    result = cli("export", *args, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_out_must_be_a_file_and_is_never_replaced_unasked(cli, tmp_path):
    result = cli("export", "--model", "shapes-tinyssd", "--out", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.output
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a user's file")
    kept = cli("export", "--model", "shapes-tinyssd", "--out", mine)
    assert kept.exit_code == 2 and "--exist-ok" in kept.output
    assert mine.read_bytes() == b"a user's file"
    replaced = cli("export", "--model", "shapes-tinyssd", "--out", mine, "--exist-ok")
    assert replaced.exit_code == 0, replaced.output
    assert mine.stat().st_size > 10_000 and not list(tmp_path.glob(".*part"))
