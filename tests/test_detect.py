"""`visiontool detect` end to end: sources, outputs and their schemas, failures, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import noise_image, save
from visiontool.io.checkpoint import make_checkpoint, save_checkpoint
from visiontool.models.factory import load_model

MODEL = ["--model", "frcnn-mobile-320", "--weights", "none", "--workers", "0"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(3):
        save(noise_image(160, 120, seed=i), root / f"img{i}.jpg")
    save(noise_image(100, 80, seed=9), root / "sub" / "deep.png")
    (root / "notes.md").write_text("not an image, skipped in folders")
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_folder_writes_every_output_with_schema(cli, images, tmp_path):
    out = tmp_path / "run"
    result = cli("detect", images, *MODEL, "--conf", "0", "--max-det", "5", "--out", out,
                 "--save-coco", "--save-txt", "--save-conf")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "predictions.jsonl")
    assert [Path(r["image"]).name for r in rows] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    for row in rows:
        assert set(row) == {"image", "width", "height", "detections", "time_ms", "error", "saved"}
        name = Path(row["image"]).stem
        assert row["saved"] == [Path(row["image"]).name, f"labels/{name}.txt"]
        assert (row["width"], row["height"]) == (160, 120) and row["error"] is None
        assert 0 < len(row["detections"]) <= 5
        for det in row["detections"]:
            assert set(det) == {"box", "score", "class_id", "label"}
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
            assert isinstance(det["label"], str) and 0 <= det["class_id"] < 80
        scores = [d["score"] for d in row["detections"]]
        assert scores == sorted(scores, reverse=True)
    for name in ("img0.jpg", "img1.jpg", "img2.jpg"):
        assert (out / name).stat().st_size > 0
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == sum(len(r["detections"]) for r in rows)
    first = coco[0]
    assert set(first) >= {"image_id", "category_id", "bbox", "score"}
    assert 1 <= first["category_id"] <= 90
    labels = (out / "labels" / "img0.txt").read_text().splitlines()
    assert len(labels) == len(rows[0]["detections"])
    cls, cx, cy, w, h, conf = labels[0].split()
    det = rows[0]["detections"][0]
    assert int(cls) == det["class_id"] and abs(float(conf) - det["score"]) < 1e-4
    assert abs(float(cx) * 160 - (det["box"][0] + det["box"][2]) / 2) < 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"images": 3, "ok": 3, "failed": 0,
                                 "detections": len(coco)}  # fmt: skip
    assert summary["model"] == "frcnn-mobile-320" and "torch" in summary["versions"]
    assert "results saved to" in result.output


def test_recursive_keeps_relative_paths(cli, images, tmp_path):
    out = tmp_path / "run"
    assert cli("detect", images, "-r", *MODEL, "--out", out).exit_code == 0
    assert (out / "sub" / "deep.png").is_file()
    assert len(read_jsonl(out / "predictions.jsonl")) == 4


def test_glob_list_file_and_stdin(cli, images, tmp_path):
    out = tmp_path / "glob"
    assert cli("detect", f"{images}/img[01].jpg", *MODEL, "--out", out).exit_code == 0
    assert len(read_jsonl(out / "predictions.jsonl")) == 2
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my images\n{images / 'img2.jpg'}\n\n{images / 'sub/deep.png'}\n")
    out = tmp_path / "list"
    assert cli("detect", listing, *MODEL, "--out", out).exit_code == 0
    assert [Path(r["image"]).name for r in read_jsonl(out / "predictions.jsonl")] == [
        "img2.jpg",
        "deep.png",
    ]
    out = tmp_path / "stdin"
    result = cli("detect", "-", *MODEL, "--out", out, input=f"{images / 'img1.jpg'}\n")
    assert result.exit_code == 0
    assert len(read_jsonl(out / "predictions.jsonl")) == 1


def test_same_names_from_two_folders_do_not_collide(cli, tmp_path):
    a = save(noise_image(seed=1), tmp_path / "a" / "x.jpg")
    b = save(noise_image(seed=2), tmp_path / "b" / "x.jpg")
    out = tmp_path / "run"
    assert cli("detect", a, b, *MODEL, "--out", out).exit_code == 0
    assert (out / "x.jpg").is_file() and (out / "x_2.jpg").is_file()


def test_bad_files_are_reported_and_the_rest_processed(cli, images, tmp_path):
    mixed = tmp_path / "mixed"
    save(noise_image(seed=3), mixed / "good.jpg")
    (mixed / "empty.jpg").write_bytes(b"")
    (mixed / "text.png").write_text("not an image")
    good = (mixed / "good.jpg").read_bytes()
    (mixed / "truncated.jpg").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    result = cli("detect", mixed, *MODEL, "--out", out)
    assert result.exit_code == 1
    rows = {Path(r["image"]).name: r for r in read_jsonl(out / "predictions.jsonl")}
    assert rows["good.jpg"]["error"] is None
    assert "empty" in rows["empty.jpg"]["error"]
    assert "not an image" in rows["text.png"]["error"]
    assert "truncated" in rows["truncated.jpg"]["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 3 and summary["counts"]["ok"] == 1
    assert {Path(f["image"]).name for f in summary["failures"]} == {
        "empty.jpg", "text.png", "truncated.jpg"}  # fmt: skip
    strict = cli("detect", mixed, *MODEL, "--out", tmp_path / "strict", "--strict")
    assert strict.exit_code == 1
    assert json.loads((tmp_path / "strict" / "summary.json").read_text())["stopped_early"]


def test_usage_errors_exit_2(cli, images, tmp_path):
    missing = cli("detect", tmp_path / "nope.jpg", *MODEL, "--out", tmp_path / "o")
    assert missing.exit_code == 2 and "no such file or directory" in missing.output
    assert not (tmp_path / "o").exists()
    empty = cli("detect", "", *MODEL, "--out", tmp_path / "o")  # not the current folder
    assert empty.exit_code == 2 and "an empty SOURCE" in empty.output
    assert not (tmp_path / "o").exists()
    unknown = cli("detect", images, "--model", "frcnn-mobil", "--weights", "none")
    assert unknown.exit_code == 2 and "did you mean 'frcnn-mobile'" in unknown.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("detect", empty, *MODEL).exit_code == 2
    assert cli("detect", images, *MODEL, "--conf", "2").exit_code == 2
    bad_class = cli("detect", images, *MODEL, "--classes", "persn")
    assert bad_class.exit_code == 2 and "'person'" in bad_class.output


def test_missing_pretrained_weights_offline_exit_3(cli, images, tmp_path):
    result = cli("detect", images, "--model", "frcnn-mobile-320", "--out", tmp_path / "o")
    assert result.exit_code == 3
    message = result.output.strip().splitlines()[-1]
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in message and "--weights PATH" in message
    assert "checkpoints" in message and "Traceback" not in result.output


def test_json_mode_prints_jsonl_on_stdout(cli, images, tmp_path):
    result = cli("detect", images / "img0.jpg", *MODEL, "--json", "--out", tmp_path / "o")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 and Path(lines[0]["image"]).name == "img0.jpg"


def test_batch_size_invariance(cli, images, tmp_path):
    outputs = []
    for batch in ("1", "4"):
        out = tmp_path / f"b{batch}"
        args = ("detect", images, *MODEL, "--conf", "0", "--batch", batch, "--out", out)
        assert cli(*args).exit_code == 0
        outputs.append(read_jsonl(out / "predictions.jsonl"))
    for one, four in zip(*outputs, strict=True):
        assert len(one["detections"]) == len(four["detections"])
        for a, b in zip(one["detections"], four["detections"], strict=True):
            assert a["class_id"] == b["class_id"]
            assert abs(a["score"] - b["score"]) < 1e-4
            assert max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) < 0.05


def test_inflight_batches_give_identical_results_in_input_order(cli, images, tmp_path):
    """Several batches in the model at once (threads) must not change a number or the order."""
    outputs = []
    for inflight in ("1", "3"):
        out = tmp_path / f"i{inflight}"
        args = ("detect", images, "-r", *MODEL, "--conf", "0", "--inflight", inflight)
        assert cli(*args, "--out", out).exit_code == 0
        rows = read_jsonl(out / "predictions.jsonl")
        outputs.append([(r["image"], r["detections"]) for r in rows])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["inflight"] == int(inflight) and summary["conf"] == 0  # what was applied
    assert outputs[0] == outputs[1]
    assert [Path(image).name for image, _ in outputs[0]] == [
        "img0.jpg", "img1.jpg", "img2.jpg", "deep.png"]  # fmt: skip
    assert cli("detect", images, *MODEL, "--inflight", "0").exit_code == 2


def test_strict_stops_at_the_first_failure_after_writing_the_ones_before(cli, tmp_path):
    folder = tmp_path / "seq"
    for i, name in enumerate(("a.jpg", "b.jpg", "d.jpg", "e.jpg")):
        save(noise_image(seed=i), folder / name)
    (folder / "c.jpg").write_bytes(b"")
    out = tmp_path / "run"
    assert cli("detect", folder, *MODEL, "--strict", "--out", out).exit_code == 1
    rows = read_jsonl(out / "predictions.jsonl")
    assert [(Path(r["image"]).name, r["error"] is None) for r in rows] == [
        ("a.jpg", True), ("b.jpg", True), ("c.jpg", False)]  # fmt: skip
    assert not (out / "d.jpg").exists()


def test_workers_decode_in_input_order(cli, images, tmp_path):
    out = tmp_path / "w"
    args = ["detect", images, "-r", "--model", "frcnn-mobile-320", "--weights", "none"]
    assert cli(*args, "--workers", "2", "--out", out).exit_code == 0
    names = [Path(r["image"]).name for r in read_jsonl(out / "predictions.jsonl")]
    assert names == ["img0.jpg", "img1.jpg", "img2.jpg", "deep.png"]


def test_class_filter_and_max_det(cli, images, tmp_path):
    out = tmp_path / "f"
    args = ("detect", images / "img0.jpg", *MODEL, "--conf", "0", "--out", out)
    assert cli(*args, "--classes", "person,car", "--max-det", "3").exit_code == 0
    dets = read_jsonl(out / "predictions.jsonl")[0]["detections"]
    assert len(dets) <= 3 and {d["label"] for d in dets} <= {"person", "car"}


def test_checkpoint_round_trip_rebuilds_model(cli, images, tmp_path):
    loaded = load_model("frcnn-mobile-320", "none")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, make_checkpoint(loaded.module.state_dict(), loaded.info.to_dict()))
    outs = []
    for name, weights in (("a", ckpt), ("b", ckpt)):
        out = tmp_path / name
        args = ["detect", images / "img0.jpg", "--weights", weights, "--conf", "0"]
        result = cli(*args, "--workers", "0", "--out", out)
        assert result.exit_code == 0, result.output
        outs.append(read_jsonl(out / "predictions.jsonl")[0]["detections"])
    assert outs[0] == outs[1] and outs[0]
    from visiontool.engine.predict.predictor import Predictor
    from visiontool.io.images import read_image

    direct = Predictor(loaded, conf=0.0, max_det=300).predict([read_image(images / "img0.jpg")])
    assert len(direct[0].scores) == len(outs[0])
    assert abs(float(direct[0].scores[0]) - outs[0][0]["score"]) < 1e-4


def test_wrong_checkpoints_exit_3(cli, images, tmp_path):
    classifier = load_model("resnet18", "none")
    ckpt = tmp_path / "cls.pt"
    save_checkpoint(
        ckpt, make_checkpoint(classifier.module.state_dict(), classifier.info.to_dict())
    )
    result = cli("detect", images, "--model", "frcnn-mobile-320", "--weights", ckpt)
    assert result.exit_code == 3 and "'resnet18' checkpoint" in result.output
    plain = tmp_path / "plain.pt"
    torch.save(classifier.module.state_dict(), plain)
    result = cli("detect", images, "--model", "resnet34", "--weights", plain)
    assert result.exit_code == 3 and "do not fit model 'resnet34'" in result.output
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    result = cli("detect", images, "--model", "resnet18", "--weights", garbage)
    assert result.exit_code == 3 and "not a readable PyTorch checkpoint" in result.output
    result = cli("detect", images, "--model", "resnet18", "--weights", tmp_path)
    assert result.exit_code == 3 and "is a folder: --weights takes a weights file" in result.output
    code = tmp_path / "code.pt"
    torch.save({"fn": subprocess.Popen}, code)
    result = cli("detect", images, "--model", "resnet18", "--weights", code)
    assert result.exit_code == 3 and "weights_only" in result.output


def test_classifier_reports_topk(cli, images, tmp_path):
    out = tmp_path / "cls"
    args = ("detect", images / "img0.jpg", "--model", "resnet18", "--weights", "none")
    result = cli(*args, "--workers", "0", "--topk", "3", "--out", out)
    assert result.exit_code == 0
    assert "1 image, 0 failed" in result.output and "detections" not in result.output
    row = read_jsonl(out / "predictions.jsonl")[0]
    assert "detections" not in row and len(row["classes"]) == 3
    scores = [c["score"] for c in row["classes"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_default_out_increments(cli, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert cli("detect", images / "img0.jpg", *MODEL).exit_code == 0
    assert (tmp_path / "runs/detect/exp/summary.json").is_file()
    assert (tmp_path / "runs/detect/exp2/summary.json").is_file()


def test_python_api(images, tmp_path):
    import visiontool

    config = visiontool.DetectConfig(
        sources=[str(images / "img1.jpg")], model="frcnn-mobile-320", weights="none",
        out=tmp_path / "api", workers=0, conf=0.0,
    )  # fmt: skip
    seen = []
    summary = visiontool.detect(config, on_result=seen.append)
    assert summary.images == 1 and seen[0].detections


def test_interrupt_keeps_what_was_done_and_marks_the_run_incomplete(images, tmp_path, monkeypatch):
    import visiontool
    from visiontool.engine.predict.predictor import Predictor

    real = Predictor.predict

    def interrupted_at_deep_png(self, batch):  # the fourth image, the only 100x80 one
        if tuple(batch[0].shape[-2:]) == (80, 100):
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Predictor, "predict", interrupted_at_deep_png)
    out = tmp_path / "int"
    config = visiontool.DetectConfig(
        sources=[str(images)], recursive=True, out=out, model="frcnn-mobile-320", weights="none"
    )
    with pytest.raises(KeyboardInterrupt):
        visiontool.detect(config)
    rows = read_jsonl(out / "predictions.jsonl")
    assert [Path(r["image"]).name for r in rows] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] and summary["counts"]["images"] == 3


def test_outputs_get_normal_file_permissions(cli, images, tmp_path):
    import os
    import stat

    out = tmp_path / "perm"
    assert cli("detect", images / "img0.jpg", *MODEL, "--out", out).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("img0.jpg", "summary.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("name", ["frcnn-mobile-320", "ssdlite"])
def test_predictor_matches_the_model_run_directly(name, images):
    """Resizing before normalising (the predictor's speed-up) changes no detection."""
    from visiontool.engine.predict.predictor import Predictor
    from visiontool.io.images import read_image

    torch.manual_seed(0)
    loaded = load_model(name, "none")
    predictor = Predictor(loaded, conf=0.0, max_det=1000)
    image = read_image(images / "img0.jpg")
    ours = predictor.predict([image])[0]
    with torch.inference_mode():
        direct = loaded.module([image.float() / 255])[0]
    is_class = torch.tensor(loaded.info.raw_to_class())[direct["labels"]] >= 0  # drop "N/A"
    keep = is_class & (direct["scores"] >= 0.0)
    order = direct["scores"][keep].argsort(descending=True, stable=True)
    assert len(ours.scores) == int(keep.sum()) > 0
    assert torch.allclose(ours.scores, direct["scores"][keep][order], atol=1e-5)
    assert torch.allclose(ours.boxes, direct["boxes"][keep][order], atol=1e-3)


def test_writing_overlaps_the_model(images, tmp_path, monkeypatch):
    """Drawing and writing run in their own thread while the model works on the next batch:
    a run takes about the longer of the two stages, not their sum."""
    import time

    import visiontool
    from visiontool.engine.predict.predictor import ImagePrediction, Predictor
    from visiontool.io.writers import ImageWriter

    def slow_model(self, batch):
        time.sleep(0.05)
        return [ImagePrediction(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
                for _ in batch]  # fmt: skip

    real_write = ImageWriter.write

    def slow_write(self, result, image, base=None, bgr=None, encoded=None):
        time.sleep(0.05)
        return real_write(self, result, image, base, bgr, encoded)

    monkeypatch.setattr(Predictor, "predict", slow_model)
    monkeypatch.setattr(ImageWriter, "write", slow_write)
    config = visiontool.DetectConfig(
        sources=[str(images / "img0.jpg")] * 8, model="frcnn-mobile-320", weights="none",
        out=tmp_path / "o", workers=0, inflight=1,
    )  # fmt: skip
    summary = visiontool.detect(config)
    assert summary.images == 8
    assert summary.total_s < 0.7  # 8 x (50 + 50) ms one after the other; ~0.45 s overlapped


def test_a_classifiers_failed_image_has_an_empty_classes_list(cli, tmp_path):
    """Every line of a classifier's predictions.jsonl has `classes`, failed images too."""
    folder = tmp_path / "in"
    folder.mkdir()
    save(noise_image(32, 32), folder / "ok.png")
    (folder / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = cli("detect", folder, "--model", "digits-lenet", "--no-save-img", "--workers", "0",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("classes" in r and "detections" not in r for r in rows)
    assert [r["classes"] for r in rows if r["error"]] == [[]]
