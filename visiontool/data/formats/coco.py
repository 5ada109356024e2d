"""COCO detection json (`annotations/instances_<split>.json` + an image folder).

Category ids are usually not contiguous (1..90 for COCO); classes are the categories sorted by
id and `category_ids` keeps the original id of each, so results can be written back in COCO ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visiontool.data.detection import DetectionDataset
from visiontool.data.formats.common import match_split, place_file, unique_names
from visiontool.data.records import (
    ImageRecord,
    Issues,
    RawBox,
    build_record,
    name_problem,
    outside_reason,
    read_text_capped,
)
from visiontool.errors import DataError
from visiontool.ops.boxes import xywh_to_xyxy, xyxy_to_xywh


def probe(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".json" and _looks_like_coco(path)
    return bool(_annotation_files(path))


def _looks_like_coco(path: Path) -> bool:
    if not path.is_file():  # a FIFO named x.json would block the open
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return b'"images"' in head or b'"annotations"' in head or b'"categories"' in head


def _annotation_files(root: Path) -> dict[str, Path]:
    """split name -> json, from `annotations/*.json` or `*.json` in the folder."""
    found: dict[str, Path] = {}
    for folder in (root / "annotations", root):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            name = path.stem
            if name.startswith("instances_"):
                name = name[len("instances_") :]
            elif folder == root and not _looks_like_coco(path):
                continue
            if not name or name.startswith("."):
                continue
            found.setdefault(name, path)
        if found:
            break
    return found


def splits(path: Path) -> list[str]:
    return [] if path.is_file() else list(_annotation_files(path))


def read(path: Path, split: str | None, *, classes: list[str] | None = None) -> DetectionDataset:
    """Read one split (or the one json given)."""
    if path.is_file():
        json_path, split_name = path, _split_of(path)
    else:
        files = _annotation_files(path)
        if not files:
            raise DataError(f"{path}: no COCO annotation json (annotations/instances_*.json)")
        split_name = match_split(split, list(files), path)
        json_path = files[split_name]
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    return read_json(json_path, root=root, split=split_name)


def _split_of(json_path: Path) -> str:
    stem = json_path.stem
    return stem[len("instances_") :] if stem.startswith("instances_") else stem


def _load(json_path: Path, issues: Issues) -> dict[str, Any] | None:
    try:
        text = read_text_capped(json_path)
    except (OSError, UnicodeDecodeError) as exc:
        issues.error(json_path, f"cannot read file ({exc})")
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        issues.error(f"{json_path}:{exc.lineno}", f"invalid JSON ({exc.msg}, column {exc.colno})")
        return None
    except RecursionError:
        issues.error(json_path, "invalid COCO JSON: nested too deeply")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        issues.error(json_path, "not a COCO detection file (no 'images' list)")
        return None
    return data


def read_json(
    json_path: Path, *, root: Path, split: str | None, image_dir: Path | None = None
) -> DetectionDataset:
    issues = Issues()
    data = _load(json_path, issues)
    if data is None:
        return DetectionDataset([], [], root=root, format="coco", split=split, issues=issues.items)
    cat_ids, classes = _categories(data, json_path, issues)
    index_of = {cid: k for k, cid in enumerate(cat_ids)}
    images = _images(data, json_path, issues)
    image_dir = image_dir or _find_image_dir(json_path, root, split, images)
    raw: dict[int, list[RawBox]] = {image_id: [] for image_id in images}
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"{json_path}: annotations[{i}]"
        box = _annotation(ann, where, index_of, raw, issues)
        if box is not None:
            raw[ann["image_id"]].append(box)
    records = []
    for image_id, image in images.items():
        record = _record(image_id, image, image_dir, root, json_path, raw[image_id], issues)
        if record is not None:
            records.append(record)
    return DetectionDataset(
        records,
        classes,
        root=root,
        category_ids=cat_ids,
        format="coco",
        split=split,
        issues=issues.items,
    )


def _categories(
    data: dict[str, Any], json_path: Path, issues: Issues
) -> tuple[list[int], list[str]]:
    cats: dict[int, str] = {}
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            issues.error(f"{json_path}: categories[{i}]", "category without an integer 'id'")
            continue
        if cat["id"] in cats:
            issues.error(f"{json_path}: categories[{i}]", f"duplicate category id {cat['id']}")
            continue
        name = str(cat.get("name", cat["id"]))
        problem = name_problem(name)
        if problem:
            issues.error(f"{json_path}: categories[{i}]", f"category name {name!r} {problem}")
            continue
        if name in cats.values():  # classes are matched by name (predictions, --classes)
            twin = next(k for k, v in cats.items() if v == name)
            issues.error(
                f"{json_path}: categories[{i}]",
                f"category name {name!r} is also category id {twin}'s: class names must be "
                "unique (predictions and --classes name classes)",
            )
            continue
        cats[cat["id"]] = name
    if not cats:
        issues.error(json_path, "no 'categories': cannot name the classes")
    ids = sorted(cats)
    return ids, [cats[i] for i in ids]


def _images(data: dict[str, Any], json_path: Path, issues: Issues) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            issues.error(where, "image entry needs 'id' and 'file_name'")
            continue
        if not isinstance(image["file_name"], str) or not image["file_name"].strip():
            issues.error(where, f"file_name must be a path, got {image['file_name']!r}")
            continue
        try:
            hash(image["id"])
        except TypeError:
            issues.error(where, f"image id must be an integer, got {image['id']!r}")
            continue
        if image["id"] in images:
            issues.error(where, f"duplicate image id {image['id']}")
            continue
        images[image["id"]] = image
    return images


def _find_image_dir(
    json_path: Path, root: Path, split: str | None, images: dict[int, dict[str, Any]]
) -> Path:
    """Where `file_name`s live: the first candidate folder holding the first images."""
    names = [str(image["file_name"]) for image in list(images.values())[:5]]
    names = [n for n in names if "\x00" not in n and outside_reason(root / n, root) is None]
    candidates = []
    for base in (root, json_path.parent):
        if split:
            candidates += [base / split, base / "images" / split]
        candidates += [base / "images", base]
    for base in (root / "images", root):  # then any one-level subfolder
        if base.is_dir():
            candidates += sorted(p for p in base.iterdir() if p.is_dir())
    for folder in candidates:
        if names and any((folder / name).is_file() for name in names):
            return folder
    return candidates[0]


def _annotation(
    ann: Any,
    where: str,
    index_of: dict[int, int],
    raw: dict[int, list[RawBox]],
    issues: Issues,
) -> RawBox | None:
    if not isinstance(ann, dict):
        issues.error(where, "annotation is not an object")
        return None
    bbox = ann.get("bbox")
    if not all(_hashable(ann.get(key)) for key in ("image_id", "category_id")):
        issues.error(where, "image_id and category_id must be integers")
        return None
    if ann.get("image_id") not in raw:
        issues.error(where, f"unknown image_id {ann.get('image_id')!r}")
        return None
    if ann.get("category_id") not in index_of:
        issues.error(where, f"unknown class: category_id {ann.get('category_id')!r}")
        return None
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) for v in bbox)
    ):
        issues.error(where, f"bbox must be [x, y, w, h] numbers, got {bbox!r}")
        return None
    x1, y1, x2, y2 = xywh_to_xyxy(tuple(float(v) for v in bbox))
    area = ann.get("area")
    return RawBox(
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        label=index_of[ann["category_id"]],
        iscrowd=bool(ann.get("iscrowd", 0)),
        difficult=bool(ann.get("ignore", 0)),
        area=float(area) if isinstance(area, (int, float)) else None,
        where=where,
    )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _record(
    image_id: int,
    image: dict[str, Any],
    image_dir: Path,
    root: Path,
    json_path: Path,
    raw: list[RawBox],
    issues: Issues,
) -> ImageRecord | None:
    where = f"{json_path}: image id {image_id}"
    file_name = str(image["file_name"])
    path = image_dir / file_name
    problem = outside_reason(path, root)
    if problem:
        issues.error(where, f"file_name {file_name!r} {problem}")
        return None
    if not path.is_file():
        issues.error(where, f"missing image file {path}")
        return None
    width, height = image.get("width"), image.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        from visiontool.io.images import image_size

        try:
            width, height = image_size(path)
        except Exception as exc:  # ImageError
            issues.error(where, f"unreadable image {path} ({exc})")
            return None
    if not isinstance(image_id, int):
        issues.error(where, f"image id must be an integer, got {image_id!r}")
        return None
    return build_record(image_id, path, width, height, raw, issues)


def write(splits: dict[str, DetectionDataset], out: Path, *, transfer: str = "copy") -> None:
    """`out/annotations/instances_<split>.json` and `out/images/<split>/<file>`."""
    from visiontool.io.atomic import write_json

    for split, dataset in splits.items():
        records = dataset.records()
        names = unique_names([r.path for r in records])
        for record, name in zip(records, names, strict=True):
            place_file(record.path, out / "images" / split / name, transfer=transfer)
        data = to_coco_dict(dataset, file_names=names)
        write_json(out / "annotations" / f"instances_{split}.json", data, indent=None)


def to_coco_dict(dataset: Any, *, file_names: list[str] | None = None) -> dict[str, Any]:
    """COCO ground truth of any detection data set (VOC and YOLO too, for `eval`): images,
    annotations (bbox xywh, area, iscrowd), categories.

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
            xywh = xyxy_to_xywh(tuple(float(v) for v in record.boxes[k]))
            ann = {
                "id": len(annotations) + 1,
                "image_id": int(record.image_id),
                "category_id": int(category_ids[int(record.labels[k])]),
                "bbox": [_r(v) for v in xywh],
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
