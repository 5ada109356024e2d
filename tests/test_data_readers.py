"""Each reader on a small fixture written here, checked against hand-computed boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from visiontool.data.datasets import open_dataset
from visiontool.data.formats.voc import VOC_CLASSES
from visiontool.errors import DataError


def write_image(path: Path, width: int = 40, height: int = 30, colour=(200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(path)
    return path


def write_coco(root: Path) -> Path:
    write_image(root / "images" / "val" / "a.png")
    write_image(root / "images" / "val" / "b.png", 20, 10)
    data = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 9, "file_name": "b.png", "width": 20, "height": 10},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        ],
        "categories": [{"id": 5, "name": "dog"}, {"id": 1, "name": "cat"}],
    }
    path = root / "annotations" / "instances_val.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_reader_maps_ids_and_keeps_negatives(tmp_path: Path) -> None:
    write_coco(tmp_path)
    ds = open_dataset(tmp_path, split="val")
    assert ds.format == "coco"
    assert ds.classes == ["cat", "dog"]  # sorted by category id
    assert ds.category_ids == [1, 5]
    assert len(ds) == 2
    records = {r.image_id: r for r in ds.records()}
    np.testing.assert_allclose(records[7].boxes, [[1, 2, 11, 7], [0, 0, 40, 30]])
    assert records[7].labels.tolist() == [1, 0]
    assert records[7].iscrowd.tolist() == [False, True]
    assert len(records[9].boxes) == 0  # negative image kept
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
    assert target["labels"].dtype == torch.int64
    assert target["image_id"] == 7
    assert target["iscrowd"].tolist() == [0, 1]
    assert target["area"].tolist() == [50.0, 1200.0]


def test_coco_json_path_and_split_prefix(tmp_path: Path) -> None:
    json_path = write_coco(tmp_path)
    assert len(open_dataset(json_path)) == 2
    json_path.rename(json_path.with_name("instances_val2017.json"))
    assert open_dataset(tmp_path, split="val").split == "val2017"
    with pytest.raises(DataError, match="no split 'train'"):
        open_dataset(tmp_path, split="train")


VOC_XML = """<annotation><filename>{name}.jpg</filename>
<size><width>50</width><height>40</height><depth>3</depth></size>
<object><name>dog</name><truncated>1</truncated><difficult>0</difficult>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object>
<object><name>cat</name><difficult>1</difficult>
<bndbox><xmin>11</xmin><ymin>6</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object>
</annotation>"""


def write_voc(root: Path, names=("x1", "x2")) -> Path:
    (root / "Annotations").mkdir(parents=True)
    for name in names:
        write_image(root / "JPEGImages" / f"{name}.jpg", 50, 40)
        (root / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(name=name))
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text(f"{names[0]}\n")
    (sets / "val.txt").write_text(f"{names[1]}\n")
    return root


def test_voc_reader_one_based_coordinates_and_flags(tmp_path: Path) -> None:
    write_voc(tmp_path)
    ds = open_dataset(tmp_path, split="val")
    assert ds.format == "voc" and len(ds) == 1
    assert ds.classes == VOC_CLASSES  # every name is a VOC class: the standard order
    record = ds.records()[0]
    np.testing.assert_allclose(record.boxes, [[0, 0, 50, 40], [10, 5, 20, 15]])
    assert [ds.classes[k] for k in record.labels] == ["dog", "cat"]
    assert record.difficult.tolist() == [False, True]
    assert record.truncated.tolist() == [True, False]
    _, target = ds[0]
    assert target["difficult"].tolist() == [False, True]


def test_voc_custom_classes_sorted_over_all_splits(tmp_path: Path) -> None:
    write_voc(tmp_path)
    xml = tmp_path / "Annotations" / "x1.xml"
    xml.write_text(xml.read_text().replace("<name>dog</name>", "<name>zebra-toy</name>"))
    assert open_dataset(tmp_path, split="val").classes == ["cat", "dog", "zebra-toy"]
    assert open_dataset(tmp_path, split="train").classes == ["cat", "dog", "zebra-toy"]


def write_yolo(root: Path) -> Path:
    write_image(root / "images" / "train" / "a.jpg", 100, 50)
    write_image(root / "images" / "train" / "b.jpg", 100, 50)  # no label file: negative
    write_image(root / "images" / "val" / "c.jpg", 100, 50)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2\n")
    (root / "labels" / "val" / "c.txt").write_text("0 0.5 0.5 1 1\n")
    (root / "data.yaml").write_text(
        "path: /somewhere/else\ntrain: images/train\nval: images/val\nnames: [ball, box]\n"
    )
    return root


def test_yolo_reader_denormalizes(tmp_path: Path) -> None:
    write_yolo(tmp_path)
    ds = open_dataset(tmp_path, split="train")
    assert ds.format == "yolo" and ds.classes == ["ball", "box"]
    by_name = {r.path.name: r for r in ds.records()}
    np.testing.assert_allclose(by_name["a.jpg"].boxes, [[40, 15, 60, 35], [0, 0, 20, 10]])
    assert by_name["a.jpg"].labels.tolist() == [1, 0]
    assert len(by_name["b.jpg"].boxes) == 0
    assert len(open_dataset(tmp_path, split="val")) == 1


def test_yolo_without_yaml_uses_classes_txt(tmp_path: Path) -> None:
    write_yolo(tmp_path)
    (tmp_path / "data.yaml").unlink()
    (tmp_path / "classes.txt").write_text("ball\nbox\n")
    ds = open_dataset(tmp_path, split="val")
    assert ds.classes == ["ball", "box"]
    np.testing.assert_allclose(ds.records()[0].boxes, [[0, 0, 100, 50]])


def test_imagefolder_reader(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / "cat" / "1.png")
    write_image(tmp_path / "train" / "dog" / "2.png")
    write_image(tmp_path / "val" / "dog" / "3.png")
    train = open_dataset(tmp_path, split="train")
    val = open_dataset(tmp_path, split="val")
    assert train.format == "imagefolder" and train.classes == val.classes == ["cat", "dog"]
    assert [label for _, label in train.samples] == [0, 1]
    image, label = val[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8 and label == 1


def test_csv_single_and_multi_label(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name)
    (tmp_path / "single.csv").write_text("filename,label\na.png,cat\nb.png,dog\n")
    single = open_dataset(tmp_path / "single.csv")
    assert single.classes == ["cat", "dog"] and single[1][1] == 1
    (tmp_path / "multi.csv").write_text("a.png,cat dog\nb.png,dog\n")
    multi = open_dataset(tmp_path / "multi.csv")
    assert multi.multi_label
    assert multi[0][1].tolist() == [1.0, 1.0]
    assert multi[1][1].tolist() == [0.0, 1.0]


def test_yaml_spec_with_relative_paths(tmp_path: Path) -> None:
    write_coco(tmp_path / "coco")
    spec = tmp_path / "spec.yaml"
    spec.write_text("path: coco\nval: annotations/instances_val.json\n")
    ds = open_dataset(spec, split="val")
    assert ds.format == "coco" and ds.split == "val" and len(ds) == 2


def test_json_spec_naming_classes_for_an_image_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "data" / "tr" / "b" / "1.png")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"train": "data/tr", "names": ["a", "b"]}))
    ds = open_dataset(spec, split="train")
    assert ds.classes == ["a", "b"] and ds.samples[0][1] == 1


def test_format_forced_and_task_checked(tmp_path: Path) -> None:
    write_voc(tmp_path)
    with pytest.raises(DataError, match="classification"):
        open_dataset(tmp_path, split="train", task="classify")
    with pytest.raises(DataError):
        open_dataset(tmp_path, split="train", format="coco")


def test_formats_without_splits_return_the_whole_set(tmp_path: Path) -> None:
    write_image(tmp_path / "cat" / "1.png")
    write_image(tmp_path / "dog" / "2.png")
    assert len(open_dataset(tmp_path, split="val")) == 2
