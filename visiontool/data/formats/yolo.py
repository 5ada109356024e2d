"""YOLO txt: `images/<split>/x.jpg` with `labels/<split>/x.txt` lines `class cx cy w h`
(normalized to 0..1), and class names in `data.yaml` (`names`) or `classes.txt`.

A missing label file means an image with no objects. Segment lines (`class x1 y1 x2 y2 ...`)
are read as the box around the polygon; a sixth value (a confidence) is ignored.
"""

from __future__ import annotations

from pathlib import Path

from visiontool.data.detection import DetectionDataset
from visiontool.data.formats.common import (
    SPLIT_NAMES,
    list_images,
    match_split,
    place_file,
    read_names_file,
    unique_names,
    write_names_file,
)
from visiontool.data.records import (
    ImageRecord,
    Issues,
    RawBox,
    build_record,
    outside_reason,
    read_text_capped,
)
from visiontool.errors import DataError
from visiontool.ops.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

SPEC_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def probe(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() == ".txt"
    if any((path / name).is_file() for name in SPEC_NAMES):
        return True
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return True
    return any(
        (path / s / "images").is_dir() and (path / s / "labels").is_dir() for s in SPLIT_NAMES
    )


def _split_folders(root: Path) -> dict[str, Path]:
    """split -> images folder: images/<split>/ or <split>/images/ (Roboflow export)."""
    found = {}
    images = root / "images"
    if images.is_dir():
        for sub in sorted(p for p in images.iterdir() if p.is_dir()):
            if list_images(sub):
                found[sub.name] = sub
    for name in SPLIT_NAMES:
        if (root / name / "images").is_dir():
            found.setdefault(name, root / name / "images")
    return found


def splits(path: Path) -> list[str]:
    return [] if path.is_file() else list(_split_folders(path))


def labels_path(image: Path) -> Path:
    """images/.../x.jpg -> labels/.../x.txt (the last 'images' part), else x.txt beside it."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read(
    path: Path,
    split: str | None,
    *,
    classes: list[str] | None = None,
    root: Path | None = None,
) -> DetectionDataset:
    """`path` is the data set folder, one split's images folder, or a .txt list of images."""
    split_name = None
    issues = Issues()
    if path.is_file():
        root = root or path.parent
        images = image_list(path, root, issues)
    else:
        folders = _split_folders(path)
        if folders and not list_images(path):
            split_name = match_split(split, list(folders), path)
            images = list_images(folders[split_name], recursive=True)
            root = root or path
        else:
            images = list_images(
                path / "images" if (path / "images").is_dir() else path, recursive=True
            )
            root = root or path
    if classes is None:
        classes = _names_file(root, path)
    return read_images(images, root=root, classes=classes, split=split_name or split, issues=issues)


def read_entries(
    entries: list[Path], *, root: Path, classes: list[str] | None, split: str | None
) -> DetectionDataset:
    """One split made of several folders and/or .txt lists (a data.yaml `train: [a, b]`)."""
    issues = Issues()
    images: list[Path] = []
    for entry in entries:
        if entry.is_file():
            images += image_list(entry, root, issues)
        else:
            folder = entry / "images" if (entry / "images").is_dir() else entry
            images += list_images(folder, recursive=True)
    if classes is None:
        classes = _names_file(root, root)
    return read_images(images, root=root, classes=classes, split=split, issues=issues)


def image_list(list_file: Path, root: Path, issues: Issues) -> list[Path]:
    """The images a .txt list names (one per line, relative to the list's folder or absolute);
    a line that leads outside `root` is an error at that line."""
    try:
        lines = read_text_capped(list_file).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{list_file}: cannot read the image list ({exc})") from exc
    images = []
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        image = list_file.parent / name
        problem = outside_reason(image, root)
        if problem:
            issues.error(f"{_short(list_file, root)}:{number}", f"image {name!r} {problem}")
            continue
        images.append(image)
    return images


def _names_file(root: Path, path: Path) -> list[str] | None:
    for folder in (root, path, root / "labels"):
        for name in ("classes.txt", "classes.names", "obj.names"):
            if (folder / name).is_file():
                return read_names_file(folder / name)
    return None


def read_images(
    images: list[Path],
    *,
    root: Path,
    classes: list[str] | None,
    split: str | None,
    issues: Issues | None = None,
) -> DetectionDataset:
    issues = issues if issues is not None else Issues()
    parsed = []
    for image in images:
        parsed.append((image, _parse_labels(labels_path(image), root, issues)))
    if classes is None:
        top = max((box.label for _, boxes in parsed for box in boxes), default=-1)
        classes = [str(k) for k in range(top + 1)]
        issues.warn(root, "no class names (data.yaml 'names' or classes.txt); using numbers")
    records = []
    for image_id, (image, boxes) in enumerate(parsed, start=1):
        record = _record(image_id, image, boxes, root, classes, issues)
        if record is not None:
            records.append(record)
    return DetectionDataset(
        records, classes, root=root, format="yolo", split=split, issues=issues.items
    )


def _parse_labels(path: Path, root: Path, issues: Issues) -> list[RawBox]:
    """Normalized boxes (scaled to pixels later, once the image size is known)."""
    if not path.is_file():
        return []
    where_file = _short(path, root)
    problem = outside_reason(path, root)
    if problem:
        issues.error(where_file, f"label file {problem}")
        return []
    try:
        lines = read_text_capped(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        issues.error(where_file, f"cannot read label file ({exc})")
        return []
    boxes = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{where_file}:{number}"
        box = _parse_line(fields, where, issues)
        if box is not None:
            boxes.append(box)
    return boxes


def _parse_line(fields: list[str], where: str, issues: Issues) -> RawBox | None:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        issues.error(where, f"expected 'class cx cy w h' numbers, got {' '.join(fields)!r}")
        return None
    if len(values) < 5 or not float(values[0]).is_integer() or values[0] < 0:
        issues.error(where, f"expected 'class cx cy w h', got {' '.join(fields)!r}")
        return None
    label = int(values[0])
    if len(values) in (5, 6):
        return RawBox(*cxcywh_to_xyxy(tuple(values[1:5])), label=label, where=where)
    coords = values[1:]
    if len(coords) % 2:
        issues.error(where, "segment line needs an even number of coordinates")
        return None
    xs, ys = coords[0::2], coords[1::2]
    return RawBox(min(xs), min(ys), max(xs), max(ys), label=label, where=where)


def _record(
    image_id: int,
    image: Path,
    boxes: list[RawBox],
    root: Path,
    classes: list[str],
    issues: Issues,
) -> ImageRecord | None:
    from visiontool.io.images import image_size

    where = _short(image, root)
    problem = outside_reason(image, root)
    if problem:
        issues.error(where, f"image path {problem}")
        return None
    if not image.is_file():
        issues.error(where, "missing image file")
        return None
    try:
        width, height = image_size(image)
    except Exception as exc:  # ImageError
        issues.error(where, f"unreadable image ({exc})")
        return None
    scaled = []
    for box in boxes:
        if box.label >= len(classes):
            issues.error(box.where, f"unknown class {box.label} (there are {len(classes)} names)")
            continue
        box.x1, box.x2 = box.x1 * width, box.x2 * width
        box.y1, box.y2 = box.y1 * height, box.y2 * height
        scaled.append(box)
    return build_record(image_id, image, width, height, scaled, issues)


def _short(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def write(splits: dict[str, DetectionDataset], out: Path, *, transfer: str = "copy") -> None:
    """images/<split>/, labels/<split>/ (one txt per image, empty for negatives), data.yaml."""
    import yaml

    from visiontool.io.atomic import write_bytes

    classes = next(iter(splits.values())).classes
    for split, dataset in splits.items():
        records = dataset.records()
        for record, name in zip(records, unique_names([r.path for r in records]), strict=True):
            place_file(record.path, out / "images" / split / name, transfer=transfer)
            label_file = out / "labels" / split / f"{Path(name).stem}.txt"
            write_bytes(label_file, _label_text(record).encode())
    spec = {"path": ".", **{split: f"images/{split}" for split in splits}}
    spec["names"] = dict(enumerate(classes))
    text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    write_bytes(out / "data.yaml", text.encode("utf-8"))
    write_names_file(out / "classes.txt", classes)


def _label_text(record: ImageRecord) -> str:
    lines = []
    for k in range(len(record.boxes)):
        box = xyxy_to_cxcywh(tuple(float(v) for v in record.boxes[k]))
        scale = (record.width, record.height, record.width, record.height)
        cx, cy, w, h = (v / s for v, s in zip(box, scale, strict=True))
        lines.append(f"{int(record.labels[k])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)
