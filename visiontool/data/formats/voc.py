"""Pascal VOC: `Annotations/<id>.xml`, `JPEGImages/`, `ImageSets/Main/<split>.txt`.

VOC pixel coordinates are 1-based and inclusive (xmin=1, xmax=W covers the whole image); our
boxes are 0-based continuous, so x1 = xmin - 1, x2 = xmax (the same for y), and back on writing.
Class order: `classes.txt` when present, else the 20 VOC classes when they cover every name,
else the sorted names found in all annotation files (so every split agrees).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from visiontool.data.detection import DetectionDataset
from visiontool.data.formats.common import (
    match_split,
    place_file,
    read_names_file,
    unique_names,
    visible_stems,
    write_names_file,
)
from visiontool.data.records import (
    ImageRecord,
    Issues,
    RawBox,
    build_record,
    inside_root,
    name_problem,
    outside_reason,
    read_bytes_capped,
    read_text_capped,
)
from visiontool.errors import DataError
from visiontool.io.images import IMAGE_SUFFIXES

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip


def _root(path: Path) -> Path:
    """Accept VOCdevkit/ or VOCdevkit/VOC2007/ alike."""
    if (path / "Annotations").is_dir():
        return path
    inner = sorted(p for p in path.glob("VOC*") if (p / "Annotations").is_dir())
    if not inner:
        inner = sorted(p for p in path.glob("*/VOC*") if (p / "Annotations").is_dir())
    return inner[0] if len(inner) == 1 else path


def probe(path: Path) -> bool:
    return path.is_dir() and (_root(path) / "Annotations").is_dir()


def splits(path: Path) -> list[str]:
    folder = _root(path) / "ImageSets" / "Main"
    return sorted(s for s in visible_stems(list(folder.glob("*.txt"))) if "_" not in s)


def read(path: Path, split: str | None, *, classes: list[str] | None = None) -> DetectionDataset:
    root = _root(path)
    if not (root / "Annotations").is_dir():
        raise DataError(f"{path}: not a VOC folder (no Annotations/)")
    issues = Issues()
    split_name = match_split(split, splits(root), root)
    ids = _split_ids(root, split_name, issues)
    parsed = {i: _parse(root / "Annotations" / f"{i}.xml", issues) for i in ids}
    names = classes or _classes(root, parsed)
    index_of = {name: k for k, name in enumerate(names)}
    records = []
    for image_id, (stem, tree) in enumerate(parsed.items(), start=1):
        if tree is not None:
            record = _record(root, stem, tree, image_id, index_of, issues)
            if record is not None:
                records.append(record)
    return DetectionDataset(
        records, names, root=root, format="voc", split=split_name, issues=issues.items
    )


def _split_ids(root: Path, split: str | None, issues: Issues) -> list[str]:
    """Image ids of a split; an id whose annotation file would lie outside the data set (or
    is not a readable name) is an error at its ImageSets line."""
    if split is None:
        return sorted(visible_stems(list((root / "Annotations").glob("*.xml"))))
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    try:
        lines = read_text_capped(list_file).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: cannot read the image list ({exc})") from exc
    ids = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        problem = outside_reason(root / "Annotations" / f"{image_id}.xml", root)
        if problem:
            issues.error(f"{list_file}:{number}", f"image id {image_id!r} {problem}")
            continue
        ids.append(image_id)
    return ids


def _parse(xml_path: Path, issues: Issues) -> ET.Element | None:
    if not xml_path.is_file():
        issues.error(xml_path, "missing annotation file (listed in ImageSets)")
        return None
    try:
        return ET.fromstring(read_bytes_capped(xml_path))
    except OSError as exc:
        issues.error(xml_path, f"cannot read annotation file ({exc})")
        return None
    except ET.ParseError as exc:
        line, column = exc.position
        issues.error(f"{xml_path}:{line}", f"unreadable XML ({_reason(exc)}, column {column})")
        return None


def _reason(exc: ET.ParseError) -> str:
    return str(exc).split(":")[0]


def _classes(root: Path, parsed: dict[str, ET.Element | None]) -> list[str]:
    for name in ("classes.txt", "labels.txt"):
        if (root / name).is_file():
            return read_names_file(root / name)
    found: set[str] = set()
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        tree = parsed.get(xml_path.stem)
        if tree is None and xml_path.stem not in parsed:
            if not inside_root(xml_path, root):
                continue
            try:
                tree = ET.fromstring(read_bytes_capped(xml_path))
            except (OSError, ET.ParseError):
                continue
        if tree is not None:
            found.update((obj.findtext("name") or "").strip() for obj in tree.iter("object"))
    found = {name for name in found if not name_problem(name)}
    return list(VOC_CLASSES) if found and found <= set(VOC_CLASSES) else sorted(found)


def _record(
    root: Path,
    stem: str,
    tree: ET.Element,
    image_id: int,
    index_of: dict[str, int],
    issues: Issues,
) -> ImageRecord | None:
    xml_path = root / "Annotations" / f"{stem}.xml"
    image_path = _image_path(root, stem, tree.findtext("filename"))
    problem = outside_reason(image_path, root)
    if problem:
        issues.error(xml_path, f"<filename> {tree.findtext('filename')!r} {problem}")
        return None
    if not image_path.is_file():
        issues.error(xml_path, f"missing image file {image_path}")
        return None
    width, height = _size(tree)
    if not width or not height:
        from visiontool.io.images import image_size

        try:
            width, height = image_size(image_path)
        except Exception as exc:  # ImageError
            issues.error(xml_path, f"unreadable image {image_path} ({exc})")
            return None
    raw = []
    for k, obj in enumerate(tree.iter("object"), start=1):
        box = _object(obj, f"{xml_path}: object {k}", index_of, issues)
        if box is not None:
            raw.append(box)
    return build_record(image_id, image_path, width, height, raw, issues)


def _image_path(root: Path, stem: str, filename: str | None) -> Path:
    folder = root / "JPEGImages"
    if filename and filename.strip():
        candidate = folder / filename.strip()
        if "\x00" in filename:
            return candidate
        if candidate.is_file() or not inside_root(candidate, root):
            return candidate
    for suffix in (".jpg", *sorted(IMAGE_SUFFIXES)):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / (filename.strip() if filename and filename.strip() else f"{stem}.jpg")


def _size(tree: ET.Element) -> tuple[int, int]:
    try:
        return int(float(tree.findtext("size/width") or 0)), int(
            float(tree.findtext("size/height") or 0)
        )
    except ValueError:
        return 0, 0


def _object(obj: ET.Element, where: str, index_of: dict[str, int], issues: Issues) -> RawBox | None:
    name = (obj.findtext("name") or "").strip()
    problem = name_problem(name)
    if problem:
        issues.error(where, f"class name {name!r} {problem}")
        return None
    if name not in index_of:
        issues.error(where, f"unknown class {name!r}")
        return None
    try:
        xmin, ymin, xmax, ymax = (
            float(obj.findtext(f"bndbox/{key}") or "nan")
            for key in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        issues.error(where, "bndbox values must be numbers")
        return None
    return RawBox(
        x1=xmin - 1.0,
        y1=ymin - 1.0,
        x2=xmax,
        y2=ymax,
        label=index_of[name],
        difficult=_flag(obj, "difficult"),
        truncated=_flag(obj, "truncated"),
        where=f"{where} ({name})",
    )


def _flag(obj: ET.Element, key: str) -> bool:
    text = (obj.findtext(key) or "0").strip()
    return text not in ("0", "", "false", "False")


def write(splits: dict[str, DetectionDataset], out: Path, *, transfer: str = "copy") -> None:
    """Annotations/, JPEGImages/, ImageSets/Main/<split>.txt and classes.txt (the class order)."""
    from visiontool.io.atomic import write_bytes

    all_records = [(split, r) for split, ds in splits.items() for r in ds.records()]
    names = unique_names([r.path for _, r in all_records])
    lists: dict[str, list[str]] = {split: [] for split in splits}
    classes = next(iter(splits.values())).classes
    for (split, record), name in zip(all_records, names, strict=True):
        stem = Path(name).stem
        place_file(record.path, out / "JPEGImages" / name, transfer=transfer)
        write_bytes(out / "Annotations" / f"{stem}.xml", _xml(record, name, classes))
        lists[split].append(stem)
    for split, stems in lists.items():
        write_bytes(out / "ImageSets" / "Main" / f"{split}.txt", ("\n".join(stems) + "\n").encode())
    write_names_file(out / "classes.txt", classes)


def _xml(record: ImageRecord, file_name: str, classes: list[str]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    truncated = record.truncated if record.truncated is not None else None
    for k in range(len(record.boxes)):
        x1, y1, x2, y2 = (float(v) for v in record.boxes[k])
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = classes[int(record.labels[k])]
        ET.SubElement(obj, "pose").text = "Unspecified"
        flag = int(truncated[k]) if truncated is not None and len(truncated) > k else 0
        ET.SubElement(obj, "truncated").text = str(flag)
        ET.SubElement(obj, "difficult").text = str(int(record.difficult[k]))
        box = ET.SubElement(obj, "bndbox")
        xmin, ymin = round(x1) + 1, round(y1) + 1  # keep at least one pixel: xmax >= xmin
        values = (xmin, ymin, max(round(x2), xmin), max(round(y2), ymin))
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), values, strict=True):
            ET.SubElement(box, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"
