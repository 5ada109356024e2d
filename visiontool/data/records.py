"""The annotation data model shared by every reader and writer, and the problems found in it.

Readers parse files into `ImageRecord`s (no pixels decoded) and report `Issue`s instead of
raising on the first bad line, so `visiontool data check` can list every problem at once and
`open_dataset` can refuse a broken data set with one clear line.
"""

from __future__ import annotations

import functools
import os
import stat
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


def outside_reason(path: Path, root: Path) -> str | None:
    """Why `path` (from an annotation entry) is not inside the data set `root`, else None.

    The one rule for every path a data set file names: once symlinks and `..` are resolved
    (as the OS would), the path lies inside the resolved `root`. A link to a file or folder
    outside the data set counts as outside; absolute paths are fine when they lie inside.
    """
    text = str(path)
    if "\x00" in text:
        return "contains a NUL byte"
    if _under(_real(text), _real_dir(os.path.abspath(root))):
        return None
    norm_root = os.path.normpath(os.path.abspath(root))
    if not _under(os.path.normpath(os.path.abspath(text)), norm_root):
        return f"escapes the data set folder {root}"
    return f"leads outside the data set folder {root} through a symlink"


def inside_root(path: Path, root: Path) -> bool:
    """True when `path` stays inside `root` (see `outside_reason`)."""
    return outside_reason(path, root) is None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _real(path: str) -> str:
    """`os.path.realpath`, with the parent folder's answer cached: 100k images in a few
    folders cost one lstat each."""
    if ".." in path and ".." in Path(path).parts:  # the OS follows a link before `..`: do the same
        return os.path.realpath(path)
    parent, name = os.path.split(os.path.abspath(path))
    real_parent = _real_dir(parent)
    if not name:
        return real_parent
    joined = os.path.join(real_parent, name)
    if name in (".", "..") or os.path.islink(joined):
        return os.path.realpath(joined)
    return joined


@functools.lru_cache(maxsize=4096)
def _real_dir(path: str) -> str:
    return os.path.realpath(path)


def clear_path_cache() -> None:
    """Forget cached folder resolutions (a long-lived process that relinks folders)."""
    _real_dir.cache_clear()


_BAD_NAME_CHARS = ("/", "\\", "\x00")


def name_problem(name: str, *, folder: bool = False) -> str | None:
    """Why a class name cannot be used as written, else None. Every class name must be
    non-empty and free of line breaks and control characters (class lists are written one per
    line, so a blank one would shift every class after it); with `folder`, it must
    also be a single safe folder name (ImageFolder layout): not
    `.` or `..`, no `/`, `\\` or NUL, no Windows drive (`C:`)."""
    if not name.strip():
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a line break or control character"
    if folder:
        if name in (".", ".."):
            return "is not a folder name"
        if any(c in name for c in _BAD_NAME_CHARS):
            return "contains a path separator"
        if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
            return "starts with a drive letter"
    return None


MAX_FILE_ENV = "VISIONTOOL_MAX_FILE_MB"
DEFAULT_MAX_FILE_MB = 1024


def max_file_bytes() -> int:
    """The size cap on an annotation file read whole (`VISIONTOOL_MAX_FILE_MB`, default 1024)."""
    value = os.environ.get(MAX_FILE_ENV, "")
    try:
        mb = float(value) if value.strip() else DEFAULT_MAX_FILE_MB
    except ValueError:
        mb = DEFAULT_MAX_FILE_MB
    if not mb > 0:
        mb = DEFAULT_MAX_FILE_MB
    return int(mb * 1024 * 1024)


class FileTooLarge(OSError):
    """An annotation file over the size cap, or not a regular file."""


def read_bytes_capped(path: Path) -> bytes:
    """The bytes of a regular file of at most `max_file_bytes()`; raises `FileTooLarge` (an
    OSError, so callers report it like any unreadable file) for larger files, FIFOs, devices."""
    cap = max_file_bytes()
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise FileTooLarge(f"not a regular file: {path}")
    if info.st_size > cap:
        raise FileTooLarge(_too_large(info.st_size, cap))
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise FileTooLarge(_too_large(len(data), cap))
    return data


def read_text_capped(path: Path, encoding: str = "utf-8") -> str:
    """`read_bytes_capped` decoded; UnicodeDecodeError as for `Path.read_text`."""
    return read_bytes_capped(path).decode(encoding)


def _too_large(size: int, cap: int) -> str:
    return (
        f"file is {size / 2**20:.0f} MB, over the {cap / 2**20:.0f} MB cap; "
        f"raise it with {MAX_FILE_ENV}=<MB>"
    )
