"""`visiontool data check`: read every split without stopping at the first problem.

Readers already record problems as `Issue`s (file and line where the format has lines); this
module runs them over all splits and gathers one report, so a user fixes everything in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontool.data.records import ERROR, WARNING, Issue


@dataclass
class SplitReport:
    name: str
    images: int
    objects: int | None  # None for classification
    errors: int
    warnings: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CheckReport:
    path: str
    format: str
    task: str
    classes: list[str]
    splits: list[SplitReport] = field(default_factory=list)
    issues: list[tuple[str, Issue]] = field(default_factory=list)  # (split, issue)

    @property
    def errors(self) -> int:
        return sum(1 for _, issue in self.issues if issue.level == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for _, issue in self.issues if issue.level == WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "task": self.task,
            "classes": self.classes,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": [s.to_dict() for s in self.splits],
            "issues": [{"split": split, **issue.to_dict()} for split, issue in self.issues],
        }


def check_dataset(path: str | Path, *, format: str | None = None) -> CheckReport:
    """Every split of `path`, with its counts and problems. Raises DataError only when the
    path cannot be read as a data set at all (missing, unknown format)."""
    from visiontool.data.datasets import open_splits

    splits = open_splits(path, format=format, strict=False)
    first = next(iter(splits.values()))
    report = CheckReport(
        path=str(path), format=first.format, task=first.task, classes=list(first.classes)
    )
    seen: set[tuple[str, Issue]] = set()
    for name, dataset in splits.items():
        issues = [i for i in dataset.issues if (name, i) not in seen]
        objects = None
        if dataset.task == "detect":
            objects = sum(len(r.labels) for r in dataset.records())
        report.splits.append(
            SplitReport(
                name=name,
                images=len(dataset),
                objects=objects,
                errors=sum(1 for i in issues if i.level == ERROR),
                warnings=sum(1 for i in issues if i.level == WARNING),
            )
        )
        images = image_issues(dataset) + declared_size_issues(path, format, name, dataset)
        report.splits[-1].errors += sum(1 for i in images if i.level == ERROR)
        report.splits[-1].warnings += sum(1 for i in images if i.level == WARNING)
        issues += images
        report.issues += [(name, issue) for issue in issues]
        seen.update((name, issue) for issue in issues)
        if dataset.classes != first.classes:
            report.issues.append(
                (name, Issue(ERROR, str(path), f"split {name!r} has different class names"))
            )
    return report


# -- the image files ------------------------------------------------------------------------
# Readers parse annotations only; `data check` also opens every image's header (Pillow reads a
# few hundred bytes, nothing is decoded), so a file that is no image, or whose size differs
# from the one its annotations declare (boxes are in the declared size's pixels: `eval` scores
# them as declared), is found here rather than mid-training.


def image_issues(dataset: Any) -> list[Issue]:
    """An error for each image file that cannot be read as an image (header only), and for
    each detection record whose width x height differs from its file's (as displayed, after
    EXIF rotation, as every command decodes it)."""
    from visiontool.data.records import relative_where

    issues: list[Issue] = []
    root = Path(getattr(dataset, "root", "."))
    if getattr(dataset, "task", "detect") == "detect":
        entries = [(r.path, (int(r.width), int(r.height))) for r in dataset.records()]
    else:
        entries = [(Path(p), None) for p, _ in dataset.samples]
    for path, declared in entries:
        where = relative_where(Path(path), root)
        try:
            shown, stored = header_size(Path(path))
        except ValueError as exc:
            issues.append(Issue(ERROR, where, f"unreadable image ({exc})"))
            continue
        if declared is not None and declared != shown:
            note = (
                " (the declared size is the pixels as stored; its EXIF orientation turns the "
                "image, and boxes are read against it as displayed)"
                if declared == stored
                else ""
            )
            issues.append(
                Issue(
                    ERROR,
                    where,
                    f"declared size {declared[0]}x{declared[1]} (WxH) differs from the image "
                    f"as displayed, {shown[0]}x{shown[1]}{note}; fix the annotation's width "
                    "and height",
                )
            )
    return issues


def header_size(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """((width, height) as displayed, (width, height) as stored) from the image's header;
    ValueError with a short reason when it is not a readable image (only regular files are
    opened, so a FIFO never blocks)."""
    import os
    import stat
    import warnings

    from PIL import Image

    from visiontool.io.images import DEFAULT_MAX_PIXELS, special_file_kind

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"not a regular file ({special_file_kind(mode)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: judged below
            with Image.open(path) as opened:
                width, height = opened.size
                orientation = opened.getexif().get(0x0112, 1)
    except Image.DecompressionBombError:
        raise ValueError(f"image too large (over {DEFAULT_MAX_PIXELS:,} pixels)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "unreadable"
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "cannot identify image file" in text:
            text = "not an image (unrecognised format)"
        raise ValueError(text[:200]) from None
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if width * height > DEFAULT_MAX_PIXELS:
        raise ValueError(
            f"image too large: {width}x{height} = {width * height:,} pixels > "
            f"{DEFAULT_MAX_PIXELS:,}"
        )
    shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return shown, (width, height)


def declared_size_issues(
    path: str | Path, format: str | None, split: str, dataset: Any
) -> list[Issue]:
    """COCO image entries whose width or height is missing or not a positive whole number.
    The reader then measures the file, so the data set works here, but the file is not valid
    COCO for other tools. (The COCO json of a data spec is not re-read.)"""
    if getattr(dataset, "format", "") != "coco":
        return []
    import json

    from visiontool.data.formats import coco
    from visiontool.data.records import read_text_capped

    source = Path(path)
    if source.is_file():
        json_path = source if source.suffix.lower() == ".json" else None
    else:
        json_path = coco._annotation_files(source).get(split)
    if json_path is None:
        return []
    try:
        data = json.loads(read_text_capped(json_path))
        images = data["images"]
    except Exception:  # noqa: BLE001 - the reader has reported why it cannot be read
        return []
    issues = []
    for i, image in enumerate(images if isinstance(images, list) else []):
        if not isinstance(image, dict):
            continue
        bad = [
            f"{key} {image[key]!r}"
            for key in ("width", "height")
            if key in image and not _positive_int(image[key])
        ]
        where, name = f"{json_path}: images[{i}]", image.get("file_name")
        if bad:
            issues.append(
                Issue(
                    ERROR,
                    where,
                    f"{' and '.join(bad)} for {name!r}: width and height must be positive "
                    "whole numbers (the image's size in pixels)",
                )
            )
        elif "width" not in image or "height" not in image:
            issues.append(
                Issue(WARNING, where, f"no width/height for {name!r}; read from the image file")
            )
    return issues


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
