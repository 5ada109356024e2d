"""Conversion between formats: any detection data set to a COCO dict, and to files on disk.

`to_coco_dict` is also how `visiontool eval` scores any format with faster-coco-eval: the
ground truth of VOC or YOLO data becomes a COCO dict in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError, DataError

DETECTION_FORMATS = ("coco", "voc", "yolo")
CLASSIFICATION_FORMATS = ("imagefolder", "csv")


def to_coco_dict(dataset: Any, *, file_names: list[str] | None = None) -> dict[str, Any]:
    """COCO ground truth: images, annotations (bbox xywh, area, iscrowd), categories.

    `file_names` overrides each image's file name (writers use the names they wrote); by
    default it is the path relative to the data set root.
    """
    records = dataset.records()
    category_ids = list(dataset.category_ids)
    images, annotations = [], []
    for index, record in enumerate(records):
        images.append(
            {
                "id": int(record.image_id),
                "file_name": file_names[index] if file_names else _relative(record.path, dataset),
                "width": int(record.width),
                "height": int(record.height),
            }
        )
        areas = record.box_area()
        for k in range(len(record.boxes)):
            x1, y1, x2, y2 = (float(v) for v in record.boxes[k])
            ann = {
                "id": len(annotations) + 1,
                "image_id": int(record.image_id),
                "category_id": int(category_ids[int(record.labels[k])]),
                "bbox": [_r(x1), _r(y1), _r(x2 - x1), _r(y2 - y1)],
                "area": _r(float(areas[k])),
                "iscrowd": int(record.iscrowd[k]),
            }
            if record.difficult[k]:
                ann["ignore"] = 1  # VOC 'difficult'; read back as such by the COCO reader
            annotations.append(ann)
    categories = [
        {"id": int(cid), "name": name, "supercategory": ""}
        for cid, name in zip(category_ids, dataset.classes, strict=True)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _r(value: float) -> float:
    """Round to 1/1000 px: exact enough, and keeps written files small and stable."""
    return round(value, 3)


def _relative(path: Path, dataset: Any) -> str:
    try:
        return path.relative_to(dataset.root).as_posix()
    except ValueError:
        return path.name


def convert_dataset(
    src: str | Path,
    *,
    to: str,
    out: str | Path,
    link: bool = False,
    format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write every split of `src` in format `to` under `out`; returns a summary dict."""
    from visiontool import registry
    from visiontool.data.datasets import open_splits

    out = Path(out)
    if to not in DETECTION_FORMATS + CLASSIFICATION_FORMATS:
        raise ConfigError(
            f"--to must be one of {', '.join(DETECTION_FORMATS + CLASSIFICATION_FORMATS)}, "
            f"got {to!r}"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; choose a new folder")
    splits = open_splits(src, format=format)
    task = next(iter(splits.values())).task
    wanted = "detect" if to in DETECTION_FORMATS else "classify"
    if task != wanted:
        kind = "detection" if task == "detect" else "classification"
        raise DataError(f"{src} is a {kind} data set; it cannot be written as {to}")
    if Path(src).resolve() == out.resolve():
        raise ConfigError("--out must differ from the source folder")
    writer = registry.get("writer", to).builder
    writer(splits, out, transfer="link" if link else "copy")
    return {
        "source": str(src),
        "out": str(out),
        "format": to,
        "splits": {name: len(ds) for name, ds in splits.items()},
        "classes": len(next(iter(splits.values())).classes),
    }


def stage_dir(out: Path) -> Path:
    """A scratch folder inside `out` for generators that write images before the layout."""
    path = out / ".staging"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
