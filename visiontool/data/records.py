"""The annotation data model shared by every reader and writer, and the problems found in it.

Readers parse files into `ImageRecord`s (no pixels decoded) and report `Issue`s instead of
raising on the first bad line, so `visiontool data check` can list every problem at once and
`open_dataset` can refuse a broken data set with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ERROR = "error"
WARNING = "warning"


@dataclass
class ImageRecord:
    """One image and its boxes: absolute pixel xyxy float32, 0-based labels."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    iscrowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    area: np.ndarray | None = None  # COCO's own area when the source has it, else box area
    truncated: np.ndarray | None = None  # VOC's flag, kept for writing VOC back

    def box_area(self) -> np.ndarray:
        if self.area is not None:
            return self.area.astype(np.float32)
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return (wh[:, 0] * wh[:, 1]).astype(np.float32)


@dataclass(frozen=True)
class Issue:
    """A problem in a data set, located as precisely as the format allows."""

    level: str  # ERROR or WARNING
    where: str  # "file" or "file:line"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "where": self.where, "message": self.message}


class Issues:
    """An append-only list of problems, with helpers for the two levels."""

    def __init__(self) -> None:
        self.items: list[Issue] = []

    def error(self, where: str | Path, message: str) -> None:
        self.items.append(Issue(ERROR, str(where), message))

    def warn(self, where: str | Path, message: str) -> None:
        self.items.append(Issue(WARNING, str(where), message))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.items if i.level == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.items if i.level == WARNING]


@dataclass
class RawBox:
    """A box as read from a file, before clipping and validation."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: int
    iscrowd: bool = False
    difficult: bool = False
    truncated: bool = False
    area: float | None = None
    where: str = ""


def build_record(
    image_id: int,
    path: Path,
    width: int,
    height: int,
    raw: list[RawBox],
    issues: Issues,
) -> ImageRecord:
    """Clip boxes to the image and drop the empty ones, reporting each change as a warning."""
    kept: list[RawBox] = []
    for box in raw:
        fixed = _clip(box, width, height, issues)
        if fixed is not None:
            kept.append(fixed)
    has_area = any(b.area is not None for b in kept)
    return ImageRecord(
        image_id=image_id,
        path=path,
        width=width,
        height=height,
        boxes=np.array([[b.x1, b.y1, b.x2, b.y2] for b in kept], np.float32).reshape(-1, 4),
        labels=np.array([b.label for b in kept], np.int64),
        iscrowd=np.array([b.iscrowd for b in kept], bool),
        difficult=np.array([b.difficult for b in kept], bool),
        area=np.array(
            [b.area if b.area is not None else (b.x2 - b.x1) * (b.y2 - b.y1) for b in kept],
            np.float32,
        )
        if has_area
        else None,
        truncated=np.array([b.truncated for b in kept], bool),
    )


def _clip(box: RawBox, width: int, height: int, issues: Issues) -> RawBox | None:
    values = (box.x1, box.y1, box.x2, box.y2)
    if not all(np.isfinite(v) for v in values):
        issues.warn(box.where, f"box {_fmt(values)} is not finite; dropped")
        return None
    if box.x2 <= box.x1 or box.y2 <= box.y1:
        issues.warn(box.where, f"box {_fmt(values)} has x2<=x1 or y2<=y1; dropped")
        return None
    x1, x2 = min(max(box.x1, 0.0), width), min(max(box.x2, 0.0), width)
    y1, y2 = min(max(box.y1, 0.0), height), min(max(box.y2, 0.0), height)
    if x2 - x1 < 1e-3 or y2 - y1 < 1e-3:
        issues.warn(
            box.where, f"box {_fmt(values)} lies outside the {width}x{height} image; dropped"
        )
        return None
    if (x1, y1, x2, y2) != values and max(
        abs(a - b) for a, b in zip((x1, y1, x2, y2), values, strict=True)
    ) > 0.5:
        issues.warn(
            box.where, f"box {_fmt(values)} extends outside the {width}x{height} image; clipped"
        )
    box.x1, box.y1, box.x2, box.y2 = x1, y1, x2, y2
    return box


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def relative_where(path: Path, root: Path, line: int | None = None) -> str:
    """A short location for messages: the path relative to the data set root, plus a line."""
    try:
        text = str(path.relative_to(root))
    except ValueError:
        text = str(path)
    return f"{text}:{line}" if line is not None else text


def inside_root(path: Path, root: Path) -> bool:
    """True when `path` stays inside `root` once `..` are folded: annotation paths may not escape
    the data set. Lexical on purpose: images linked in with `convert --link` are symlinks."""
    import os

    norm_path = os.path.normpath(os.path.abspath(path))
    norm_root = os.path.normpath(os.path.abspath(root))
    return norm_path == norm_root or norm_path.startswith(norm_root.rstrip(os.sep) + os.sep)
