"""The synthetic generator: deterministic bytes, valid boxes, readable by every reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from visiontool.cli.main import app
from visiontool.data.datasets import open_dataset
from visiontool.data.synth import SHAPES, synth_classification, synth_detection

runner = CliRunner()


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for fmt in ("coco", "voc", "yolo"):
        synth_detection(tmp_path / f"{fmt}a", n=5, imgsz=64, fmt=fmt, seed=7)
        synth_detection(tmp_path / f"{fmt}b", n=5, imgsz=64, fmt=fmt, seed=7)
        assert digest(tmp_path / f"{fmt}a") == digest(tmp_path / f"{fmt}b")
    synth_detection(tmp_path / "other", n=5, imgsz=64, fmt="coco", seed=8)
    assert digest(tmp_path / "other") != digest(tmp_path / "cocoa")
    for kind in ("shapes", "digits"):
        synth_classification(tmp_path / f"{kind}a", n=12, imgsz=28, seed=1, kind=kind)
        synth_classification(tmp_path / f"{kind}b", n=12, imgsz=28, seed=1, kind=kind)
        assert digest(tmp_path / f"{kind}a") == digest(tmp_path / f"{kind}b")


def test_detection_set_is_valid_and_split(tmp_path: Path) -> None:
    summary = synth_detection(tmp_path, n=10, imgsz=96, fmt="coco", seed=0)
    assert summary["splits"] == {"train": 8, "val": 2}
    assert set(SHAPES) >= {"circle", "square", "triangle", "star", "cross", "ring"}
    train = open_dataset(tmp_path, split="train")
    assert train.classes == SHAPES and not train.issues
    for record in train.records():
        assert len(record.boxes) >= 1
        assert (record.boxes[:, :2] >= 0).all() and (record.boxes[:, 2] <= 96).all()
        assert (record.boxes[:, 2:] - record.boxes[:, :2] >= 4).all()
    image, target = train[0]
    assert image.shape == (3, 96, 96) and len(target["boxes"]) == len(target["labels"])


def test_box_is_tight_around_the_shape_pixels(tmp_path: Path) -> None:
    from visiontool.data.synth import shape_mask

    mask = shape_mask(3, 40.0, 30.0, 20.0, 0.3, (64, 80))  # a star
    ys, xs = np.nonzero(mask > 127)
    assert 29 <= xs.min() <= 32 and 48 <= xs.max() <= 51
    assert mask[30, 40] == 255 and mask[0, 0] == 0
    ring = shape_mask(5, 40.0, 30.0, 40.0, 0.0, (64, 80))
    assert ring[30, 40] == 0 and ring[30, 40 + 15] == 255  # the hole and the band


def test_classification_digits_layout(tmp_path: Path) -> None:
    synth_classification(tmp_path, n=20, imgsz=28, seed=0, kind="digits")
    train = open_dataset(tmp_path, split="train")
    val = open_dataset(tmp_path, split="val")
    assert train.classes == [str(d) for d in range(10)]
    assert len(train) == 10 and len(val) == 10
    assert sorted(label for _, label in val.samples) == list(range(10))


def test_cli_synth_json(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "synth", "--out", str(tmp_path), "--n", "4", "--imgsz", "48", "--format", "yolo",
         "--seed", "2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["format"] == "yolo" and summary["images"] == 4
    assert (tmp_path / "data.yaml").is_file() and not (tmp_path / ".staging").exists()
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--format", "png"])
    assert bad.exit_code == 2 and "unknown format 'png'" in bad.output


def test_object_size_bounds_every_shape(tmp_path: Path) -> None:
    synth_detection(
        tmp_path / "big", n=12, imgsz=128, seed=3, max_objects=1, object_size=(0.3, 0.6)
    )
    for split in ("train", "val"):
        for record in open_dataset(tmp_path / "big", split=split).records():
            extent = (record.boxes[:, 2:] - record.boxes[:, :2]).max(axis=1)
            # a rotated shape's box spans at most its extent (+1 px of rounding), and a shape
            # narrower than its extent (a triangle, a cross) still spans most of it
            assert len(record.boxes) == 1 and (extent <= 0.6 * 128 + 1).all()
            assert (extent >= 0.3 * 128 * 0.7).all()
    # the default range leaves the default data byte for byte as before
    synth_detection(tmp_path / "a", n=4, imgsz=64, seed=5)
    synth_detection(tmp_path / "b", n=4, imgsz=64, seed=5, object_size=(0.04, 0.5))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_cli_object_size_is_checked(tmp_path: Path) -> None:
    for bad, message in (("0.3", "two numbers"), ("0.6,0.2", "0 < LOW <= HIGH <= 1"),
                         ("0,0.5", "0 < LOW"), ("x,y", "two numbers")):  # fmt: skip
        result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "o"), "--n", "2",
                                     "--object-size", bad])  # fmt: skip
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
        assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["data", "synth", "--task", "classify", "--out",
                                 str(tmp_path / "c"), "--object-size", "0.2,0.4"])  # fmt: skip
    assert result.exit_code == 2 and "--task detect only" in result.output
