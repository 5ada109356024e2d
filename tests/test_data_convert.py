"""Writers and conversion: COCO -> VOC -> YOLO -> COCO keeps every box and class name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from visiontool.cli.main import app
from visiontool.data.convert import convert_dataset
from visiontool.data.datasets import open_dataset
from visiontool.data.formats.coco import to_coco_dict
from visiontool.data.synth import synth_classification, synth_detection

runner = CliRunner()


def boxes_by_file(path: Path, split: str) -> tuple[list[str], dict[str, list]]:
    ds = open_dataset(path, split=split)
    table = {
        r.path.name: sorted(
            (ds.classes[int(label)], *map(float, box))
            for box, label in zip(r.boxes, r.labels, strict=True)
        )
        for r in ds.records()
    }
    return ds.classes, table


def test_round_trip_coco_voc_yolo_coco(tmp_path: Path) -> None:
    synth_detection(tmp_path / "coco", n=8, imgsz=64, fmt="coco", seed=3)
    # give the source non-contiguous category ids and a space in a class name
    for split in ("train", "val"):
        path = tmp_path / "coco" / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        for cat in data["categories"]:
            cat["id"] *= 10
            cat["name"] = cat["name"] + " shape"
        for a in data["annotations"]:
            a["category_id"] *= 10
        path.write_text(json.dumps(data))
    convert_dataset(tmp_path / "coco", to="voc", out=tmp_path / "voc")
    convert_dataset(tmp_path / "voc", to="yolo", out=tmp_path / "yolo")
    result = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(tmp_path / "yolo"),
            "--to",
            "coco",
            "--out",
            str(tmp_path / "back"),
        ],
    )
    assert result.exit_code == 0, result.output
    for split in ("train", "val"):
        classes0, first = boxes_by_file(tmp_path / "coco", split)
        classes1, last = boxes_by_file(tmp_path / "back", split)
        assert classes0 == classes1 and classes0[0] == "circle shape"
        assert first.keys() == last.keys()
        for name, boxes in first.items():
            assert [b[0] for b in boxes] == [b[0] for b in last[name]]
            np.testing.assert_allclose(
                [b[1:] for b in boxes], [b[1:] for b in last[name]], atol=1.0
            )
            assert len(boxes) == len(last[name])


def test_to_coco_dict_scores_perfectly_against_itself(tmp_path: Path) -> None:
    from faster_coco_eval import COCO, COCOeval_faster

    synth_detection(tmp_path, n=6, imgsz=64, fmt="voc", seed=1)
    gt = to_coco_dict(open_dataset(tmp_path, split="train"))
    assert gt["categories"][0] == {"id": 1, "name": "circle", "supercategory": ""}
    detections = [{**a, "score": 1.0} for a in gt["annotations"]]
    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes(detections)
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] > 0.99


def test_convert_with_link_and_classification(tmp_path: Path) -> None:
    synth_classification(tmp_path / "folder", n=12, imgsz=16, seed=0)
    convert_dataset(tmp_path / "folder", to="csv", out=tmp_path / "csv", link=True)
    assert (tmp_path / "csv" / "train.csv").is_file()
    linked = next((tmp_path / "csv" / "images" / "train").iterdir())
    # --link makes hard links: no extra space, and the new set holds no link out of itself
    assert not linked.is_symlink() and linked.stat().st_nlink == 2
    back = open_dataset(tmp_path / "csv", split="val")
    assert back.classes == open_dataset(tmp_path / "folder", split="val").classes
    assert len(back) == 6  # one val image per class


def test_convert_refuses_task_mismatch_and_nonempty_out(tmp_path: Path) -> None:
    synth_classification(tmp_path / "folder", n=6, imgsz=16, seed=0)
    result = runner.invoke(
        app,
        ["data", "convert", str(tmp_path / "folder"), "--to", "coco", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "classification data set" in result.output
    result = runner.invoke(
        app, ["data", "convert", str(tmp_path / "folder"), "--to", "csv", "--out", str(tmp_path)]
    )
    # --out holds the source: refused as "contains" (before "not empty"), nothing written
    assert result.exit_code == 2 and "contains" in result.output
