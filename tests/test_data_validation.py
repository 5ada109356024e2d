"""Malformed data sets: each problem gives its message (file, line) and exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from visiontool.cli.main import app
from visiontool.data.check import check_dataset
from visiontool.data.datasets import open_dataset
from visiontool.errors import DataError

runner = CliRunner()


def write_image(path: Path, width: int = 40, height: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (9, 9, 9)).save(path)


def coco(root: Path, *, images=None, annotations=(), text: str | None = None) -> Path:
    write_image(root / "images" / "train" / "a.png")
    path = root / "annotations" / "instances_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": list(annotations),
        "categories": [{"id": 1, "name": "thing"}],
    }
    path.write_text(text if text is not None else json.dumps(data, indent=1))
    return root


def ann(bbox, category_id=1, image_id=1):
    return {"id": 1, "image_id": image_id, "category_id": category_id, "bbox": bbox}


def check(path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["data", "check", str(path)])
    return result.exit_code, result.output


def test_clean_set_passes(tmp_path: Path) -> None:
    code, output = check(coco(tmp_path, annotations=[ann([1, 1, 5, 5])]))
    assert code == 0 and "ok: 0 errors" in output


def test_empty_box_is_dropped_with_a_warning(tmp_path: Path) -> None:
    root = coco(tmp_path, annotations=[ann([10, 10, 0, 5]), ann([1, 1, 5, 5])])
    code, output = check(root)
    assert code == 0
    assert "annotations[0]" in output and "x2<=x1" in output and "dropped" in output
    assert len(open_dataset(root, split="train").records()[0].boxes) == 1


def test_box_outside_image_is_clipped_or_dropped(tmp_path: Path) -> None:
    root = coco(tmp_path, annotations=[ann([30, 20, 20, 20]), ann([100, 100, 5, 5])])
    report = check_dataset(root)
    messages = [i.message for _, i in report.issues]
    assert any("clipped" in m for m in messages) and any("outside" in m for m in messages)
    boxes = open_dataset(root, split="train").records()[0].boxes
    assert boxes.tolist() == [[30, 20, 40, 30]]


def test_unknown_category_is_an_error(tmp_path: Path) -> None:
    code, output = check(coco(tmp_path, annotations=[ann([1, 1, 5, 5], category_id=3)]))
    assert code == 1 and "annotations[0]" in output and "unknown class" in output


def test_missing_image_file(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "nope.png", "width": 40, "height": 30}]
    code, output = check(coco(tmp_path, images=images))
    assert code == 1 and "missing image file" in output and "nope.png" in output


def test_duplicate_image_ids(tmp_path: Path) -> None:
    image = {"id": 1, "file_name": "a.png", "width": 40, "height": 30}
    code, output = check(coco(tmp_path, images=[image, dict(image)]))
    assert code == 1 and "images[1]" in output and "duplicate image id 1" in output


def test_two_categories_of_one_name_are_an_error(tmp_path: Path) -> None:
    """Predictions and --classes name classes: two 'thing' categories would be ambiguous."""
    root = coco(tmp_path)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    data["categories"].append({"id": 7, "name": "thing"})
    path.write_text(json.dumps(data))
    code, output = check(root)
    assert code == 1 and "categories[1]" in output and "is also category id 1's" in output


def test_path_escaping_the_root(tmp_path: Path) -> None:
    write_image(tmp_path / "secret.png")
    images = [{"id": 1, "file_name": "../../../secret.png", "width": 40, "height": 30}]
    code, output = check(coco(tmp_path / "ds", images=images))
    assert code == 1 and "escapes the data set folder" in output


def test_unreadable_json_names_the_line(tmp_path: Path) -> None:
    root = coco(tmp_path, text='{\n  "images": [\n    {"id": 1,,}\n]}')
    code, output = check(root)
    assert code == 1 and "instances_train.json:3" in output and "invalid JSON" in output
    result = runner.invoke(app, ["data", "stats", str(root)])
    assert result.exit_code == 2
    assert "instances_train.json:3" in result.output and "visiontool data check" in result.output
    assert "Traceback" not in result.output


def voc(root: Path, xml: str) -> Path:
    write_image(root / "JPEGImages" / "x.jpg", 50, 40)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "x.xml").write_text(xml)
    return root


def test_unreadable_xml_names_the_line(tmp_path: Path) -> None:
    code, output = check(voc(tmp_path, "<annotation>\n<filename>x.jpg</filename>\n<size>\n"))
    assert code == 1 and "x.xml:4" in output and "unreadable XML" in output


def test_voc_unknown_class_with_classes_txt(tmp_path: Path) -> None:
    xml = (
        "<annotation><filename>x.jpg</filename><object><name>unicorn</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    root = voc(tmp_path, xml)
    (root / "classes.txt").write_text("horse\n")
    code, output = check(root)
    assert code == 1 and "x.xml: object 1" in output and "unknown class 'unicorn'" in output


def yolo(root: Path, label: str) -> Path:
    write_image(root / "images" / "a.jpg", 100, 50)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text(label)
    (root / "classes.txt").write_text("ball\n")
    return root


def test_yolo_unknown_class_names_file_and_line(tmp_path: Path) -> None:
    code, output = check(yolo(tmp_path, "0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n"))
    assert code == 1 and "labels/a.txt:2" in output and "unknown class 3" in output


def test_yolo_malformed_line(tmp_path: Path) -> None:
    code, output = check(yolo(tmp_path, "0 0.5 0.5\n"))
    assert code == 1 and "labels/a.txt:1" in output and "class cx cy w h" in output


def test_csv_missing_label_and_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("filename,label\na.png\nb.png,cat\n")
    code, output = check(tmp_path / "train.csv")
    assert code == 1
    assert "train.csv:2" in output and "train.csv:3" in output and "missing image file" in output


def test_open_dataset_refuses_errors_but_strict_false_reads(tmp_path: Path) -> None:
    root = coco(tmp_path, annotations=[ann([1, 1, 5, 5], category_id=9)])
    with pytest.raises(DataError, match="unknown class"):
        open_dataset(root, split="train")
    assert len(open_dataset(root, split="train", strict=False)) == 1


@pytest.mark.parametrize("command", ["check", "stats", "show"])
def test_missing_path_exits_2(tmp_path: Path, command: str) -> None:
    result = runner.invoke(app, ["data", command, str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no such file or folder" in result.output


def test_unknown_layout_exits_2(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    result = runner.invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 2 and "cannot tell the data set format" in result.output


def test_empty_dataset_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no images found"):
        open_dataset(tmp_path)


def test_bad_yaml_spec_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "data.yaml"
    spec.write_text("train: images\nnames: [a, b\n")
    with pytest.raises(DataError, match=r"data.yaml:\d+: invalid YAML"):
        open_dataset(spec)
