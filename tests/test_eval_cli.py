"""`visiontool eval` through the CLI: inputs, metrics.json, plots, gates and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from visiontool.cli.main import app

KEYS = [
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
    "voc07_map50", "voc_map50", "f1", "f1_conf", "per_class", "matching",
]  # fmt: skip

runner = CliRunner()


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float], crowd: int) -> dict:
    area = bbox[2] * bbox[3]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": area,
            "iscrowd": crowd}  # fmt: skip


def _line(det: dict) -> str:
    return json.dumps({"image": "c.jpg", "detections": [{"score": 0.5, **det}]})


def write_gt(tmp_path: Path) -> Path:
    """3 images (one empty), 2 classes, one crowd box."""
    gt = {
        "images": [
            {"id": 1, "file_name": "val/a.jpg", "width": 100, "height": 100},
            {"id": 2, "file_name": "val/b.jpg", "width": 100, "height": 100},
            {"id": 3, "file_name": "val/c.jpg", "width": 100, "height": 100},
        ],
        "annotations": [
            _ann(1, 1, 1, [0, 0, 10, 10], 0),
            _ann(2, 1, 2, [40, 40, 50, 50], 0),
            _ann(3, 2, 1, [20, 20, 30, 20], 0),
            _ann(4, 2, 2, [60, 0, 40, 40], 1),
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


# (image file as written by detect, box xyxy, score, label)
DETS = [
    ("/data/elsewhere/val/a.jpg", [0, 0, 10, 10], 0.9, "cat"),
    ("/data/elsewhere/val/a.jpg", [40, 40, 88, 90], 0.8, "dog"),
    ("/data/elsewhere/val/a.jpg", [70, 70, 80, 80], 0.8, "cat"),
    ("b.jpg", [20, 20, 50, 40], 0.6, "cat"),
    ("b.jpg", [60, 0, 100, 40], 0.5, "dog"),
]


def write_jsonl(tmp_path: Path, dets=DETS, extra_lines=()) -> Path:
    by_image: dict[str, list] = {}
    for image, box, score, label in dets:
        det = {"box": box, "score": score, "class_id": ["cat", "dog"].index(label), "label": label}
        by_image.setdefault(image, []).append(det)
    lines = [
        json.dumps(
            {
                "image": image,
                "width": 100,
                "height": 100,
                "detections": d,
                "time_ms": 1.0,
                "error": None,
            }
        )  # fmt: skip
        for image, d in by_image.items()
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def write_results(tmp_path: Path) -> Path:
    ids = {"a.jpg": 1, "b.jpg": 2}
    rows = [
        {"image_id": ids[Path(image).name], "category_id": ["cat", "dog"].index(label) + 1,
         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score}
        for image, box, score, label in DETS
    ]  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    return path


def reference_stats(gt_path: Path, results_path: Path) -> list[float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def invoke(*args: str):
    return runner.invoke(app, ["eval", *args])


def test_coco_results_and_jsonl_match_pycocotools(tmp_path):
    gt = write_gt(tmp_path)
    ref = reference_stats(gt, write_results(tmp_path))
    for pred in (tmp_path / "results.json", write_jsonl(tmp_path)):
        out = tmp_path / f"out_{pred.stem}"
        result = invoke("--data", str(gt), "--pred", str(pred), "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert list(metrics) == KEYS
        assert [metrics[k] for k in KEYS[:12]] == pytest.approx(ref, abs=1e-9)
        assert json.loads(result.stdout.splitlines()[0]) == metrics
        assert set(metrics["per_class"]) == {"cat", "dog"}
        cat = metrics["per_class"]["cat"]
        assert (cat["n_gt"], cat["n_pred"]) == (2, 3)
        assert metrics["per_class"]["dog"]["n_gt"] == 1  # crowd box not counted
        assert (out / "pr_curve.png").stat().st_size > 0
        assert (out / "confusion_matrix.png").stat().st_size > 0


def test_voc_numbers_by_hand(tmp_path):
    result = invoke("--data", str(write_gt(tmp_path)), "--pred", str(write_jsonl(tmp_path)),
                    "--out", str(tmp_path / "o"), "--no-plots")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    # cat: 0.9 TP, 0.8 FP, 0.6 IoU(600/900)=.67 TP -> all-point 1*.5 + (2/3)*.5; 11-pt (6+5*2/3)/11
    assert metrics["per_class"]["cat"]["voc_ap50"] == pytest.approx(0.5 + 1 / 3)
    # dog: 0.8 IoU 2500/2400+..: [40,40,90,90] vs [40,40,88,90] = 2400/2500 TP; 0.5 on crowd ignored
    assert metrics["per_class"]["dog"]["voc_ap50"] == pytest.approx(1.0)
    assert metrics["voc_map50"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
    assert metrics["voc07_map50"] == pytest.approx(((6 + 5 * 2 / 3) / 11 + 1.0) / 2)
    assert "per class" in result.output  # the per-class table is printed


def test_iou_thresholds_and_gates(tmp_path):
    gt, pred = write_gt(tmp_path), write_jsonl(tmp_path)
    base = ["--data", str(gt), "--pred", str(pred), "--no-plots", "--json"]
    result = invoke(*base, "--out", str(tmp_path / "a"), "--iou-thresholds", "0.5")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[0])
    assert metrics["map"] == metrics["map50"]
    assert metrics["map75"] == -1.0  # not among the thresholds: undefined, as pycocotools
    missed = invoke(*base, "--out", str(tmp_path / "b"), "--fail-under", "map50=0.99",
                    "--fail-under", "voc_map50=0.1")  # fmt: skip
    assert missed.exit_code == 1
    assert "gate missed: map50=" in missed.output
    assert "voc_map50" not in missed.output.split("gate missed")[-1]
    passed = invoke(*base, "--out", str(tmp_path / "c"), "--fail-under", "map50=0.1")
    assert passed.exit_code == 0, passed.output
    f1 = invoke(*base, "--out", str(tmp_path / "f"), "--fail-under", "f1=0.999")  # F1 gates too
    assert f1.exit_code == 1 and "gate missed: f1=" in f1.output
    unknown = invoke(*base, "--out", str(tmp_path / "d"), "--fail-under", "mAP50=0.1")
    assert unknown.exit_code == 2 and "map50" in unknown.output
    malformed = invoke(*base, "--out", str(tmp_path / "e"), "--fail-under", "map50")
    assert malformed.exit_code == 2


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("{not json", "line 3: not valid JSON"),
        (json.dumps({"image": "zzz.jpg", "detections": []}), "line 3: image 'zzz.jpg' is not in"),
        (_line({"box": [0, 0, 1, 1], "label": "cow"}), "line 3: unknown class name 'cow'"),
        (_line({"box": [0, 0, 1, 1], "class_id": 7}), "line 3: unknown class_id '7'"),
        (_line({"box": [0, math.nan, 1, 1], "label": "cat"}), "line 3: box or score is NaN"),
        (_line({"box": [5, 0, 1, 1], "label": "cat"}), "line 3: box has a negative width"),
        (_line({"box": [5, 0, 1], "label": "cat"}), "line 3: box must be 4 numbers"),
    ],
)  # fmt: skip
def test_bad_lines_exit_2_or_skip_with_lenient(tmp_path, line, expect):
    gt = write_gt(tmp_path)
    pred = write_jsonl(tmp_path, extra_lines=[line])
    result = invoke("--data", str(gt), "--pred", str(pred), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert expect in result.output
    assert "Traceback" not in result.output
    if "not valid JSON" in expect or "4 numbers" in expect:
        return  # structural errors are never skipped
    lenient = invoke("--data", str(gt), "--pred", str(pred), "--out", str(tmp_path / "l"),
                     "--lenient", "--json")  # fmt: skip
    assert lenient.exit_code == 0, lenient.output
    assert "warning: " in lenient.output and "skipped" in lenient.output
    assert expect.split(": ", 1)[1] in lenient.output
    (tmp_path / "clean").mkdir()
    clean_pred = write_jsonl(tmp_path / "clean")
    clean_run = invoke("--data", str(gt), "--pred", str(clean_pred), "--out", str(tmp_path / "c"),
                       "--json")  # fmt: skip
    clean = json.loads(clean_run.stdout.splitlines()[0])
    assert json.loads(lenient.stdout.splitlines()[0])["map"] == clean["map"]


def test_empty_predictions_score_zero(tmp_path):
    pred = tmp_path / "empty.jsonl"
    pred.write_text("")
    result = invoke("--data", str(write_gt(tmp_path)), "--pred", str(pred),
                    "--out", str(tmp_path / "o"), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[0])
    assert metrics["map"] == 0.0 and metrics["voc_map50"] == 0.0
    assert metrics["per_class"]["cat"]["n_pred"] == 0


def test_pred_and_model_are_exclusive(tmp_path):
    gt = write_gt(tmp_path)
    assert invoke("--data", str(gt), "--out", str(tmp_path / "o")).exit_code == 2
    missing = invoke(
        "--data", str(gt), "--pred", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "p")
    )
    assert missing.exit_code == 2 and "not found" in missing.output


def test_scoring_a_file_does_not_import_torch(tmp_path):
    gt, pred = write_gt(tmp_path), write_jsonl(tmp_path)
    code = (
        "import sys\n"
        "from visiontool.cli.main import run\n"
        "try:\n"
        f"    run(['eval', '--data', {str(gt)!r}, '--pred', {str(pred)!r},\n"
        f"         '--out', {str(tmp_path / 'o')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('NO-TORCH')\n"
    )  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "NO-TORCH" in proc.stdout


def test_dataset_folder_with_jsonl_paths(tmp_path):
    from visiontool.data.datasets import open_dataset
    from visiontool.data.synth import synth_detection

    synth_detection(tmp_path / "voc", n=10, imgsz=64, fmt="voc", val_fraction=0.3)
    dataset = open_dataset(tmp_path / "voc", split="val")
    lines = []
    for record in dataset.records():  # perfect predictions, written with absolute paths
        dets = [{"box": [float(v) for v in box], "score": 0.9, "class_id": int(label),
                 "label": dataset.classes[int(label)]}
                for box, label in zip(record.boxes, record.labels, strict=True)]  # fmt: skip
        lines.append(json.dumps({"image": str(record.path), "detections": dets}))
    pred = tmp_path / "p.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    result = invoke("--data", str(tmp_path / "voc"), "--pred", str(pred),
                    "--out", str(tmp_path / "o"), "--json", "--no-plots")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[0])
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["voc_map50"] == pytest.approx(1.0)


class _PerfectDetector:
    """Stands in for the Predictor: returns each image's ground truth, found by its pixels.
    Like the real one it keeps no order-dependent state: eval runs two batches at once."""

    def __init__(self, dataset):
        self.truth = {}
        for index in range(len(dataset)):
            image, target = dataset[index]
            self.truth[image.numpy().tobytes()] = (target["boxes"], target["labels"])
        self.calls = 0
        self.lock = threading.Lock()

    def predict(self, images):
        import torch

        from visiontool.engine.predict.predictor import ImagePrediction

        out = []
        for image in images:
            boxes, labels = self.truth[image.numpy().tobytes()]
            scores = torch.full((len(boxes),), 0.8)
            out.append(ImagePrediction(boxes=boxes, scores=scores, class_ids=labels))
        with self.lock:
            self.calls += len(images)
        return out


def test_model_path_runs_the_predictor_over_the_dataset(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from visiontool.data.datasets import open_dataset
    from visiontool.data.synth import synth_detection
    from visiontool.engine.evaluate import inputs as eval_inputs

    synth_detection(tmp_path / "coco", n=10, imgsz=64, fmt="coco", val_fraction=0.4)
    dataset = open_dataset(tmp_path / "coco", split="val")
    classes = dataset.classes
    fake = _PerfectDetector(dataset)
    loaded = SimpleNamespace(info=SimpleNamespace(classes=classes, name="fake", task="detect"))
    monkeypatch.setattr(eval_inputs.ModelRun, "load", lambda run: loaded)
    monkeypatch.setattr(eval_inputs, "_loaded_predictor", lambda run, task: (loaded, fake))
    result = invoke("--data", str(tmp_path / "coco"), "--model", "fake", "--batch", "2",
                    "--workers", "0", "--out", str(tmp_path / "o"), "--json",
                    "--fail-under", "map=0.99")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.splitlines()[0])
    assert fake.calls == len(dataset)
    assert metrics["map"] == pytest.approx(1.0)
    assert all(not math.isnan(v["ap"]) for v in metrics["per_class"].values())


def test_classifier_top1_top5(tmp_path, monkeypatch):
    import torch

    from visiontool.data.synth import synth_classification
    from visiontool.engine.evaluate import inputs as eval_inputs
    from visiontool.engine.predict.predictor import ImagePrediction

    synth_classification(tmp_path / "cls", n=24, imgsz=16)
    classes = ["circle", "square", "triangle", "star", "cross", "ring"]

    class AlwaysCircle:
        def predict(self, images):
            probs = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.06, 0.04])
            return [ImagePrediction(probs=probs) for _ in images]

    from types import SimpleNamespace

    loaded = SimpleNamespace(info=SimpleNamespace(classes=classes, name="fake", task="classify"))
    monkeypatch.setattr(eval_inputs.ModelRun, "load", lambda run: loaded)
    monkeypatch.setattr(
        eval_inputs, "_loaded_predictor", lambda run, task: (loaded, AlwaysCircle())
    )
    result = invoke("--data", str(tmp_path / "cls"), "--model", "fake", "--workers", "0",
                    "--out", str(tmp_path / "o"), "--json", "--fail-under", "top1=0.5")  # fmt: skip
    assert result.exit_code == 1, result.output
    metrics = json.loads(result.stdout.splitlines()[0])
    assert metrics["top1"] == pytest.approx(1 / 6)
    assert metrics["top5"] == pytest.approx(5 / 6)  # 'ring' ranks last
    assert metrics["per_class"]["circle"]["recall"] == 1.0
    assert np.isclose(metrics["per_class"]["circle"]["precision"], 1 / 6)
    assert (tmp_path / "o" / "confusion_matrix.png").exists()
