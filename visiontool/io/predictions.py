"""Read saved predictions for scoring: our `predictions.jsonl` or a COCO results json.

Reading is two steps. `read_predictions` parses the file into flat numpy arrays and checks its
structure (a malformed line is named by number). `resolve_predictions` ties those rows to a data
set: images by file name or relative path, classes by label name (falling back to `class_id`),
and rejects non-finite or negative-size boxes. Only json and numpy are used, so scoring a file
never imports torch.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from visiontool.errors import DataError
from visiontool.ops.boxes import xywh_to_xyxy, xyxy_to_xywh

LENIENT_HINT = "fix the file or pass --lenient to skip such entries"
MAX_LISTED = 5


@dataclass
class RawPredictions:
    """Flat rows of a predictions file, not yet tied to a data set.

    `keys` holds one entry per image record (a path for jsonl, an image id for COCO results);
    `record` maps each detection to its record and `where` names its line (jsonl) or entry.
    """

    path: Path
    format: str  # "jsonl" | "coco"
    keys: list[Any]
    record_where: list[int]
    record: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 as written: xyxy (jsonl) or xywh (coco)
    scores: np.ndarray  # (N,)
    labels: list[str | None]  # jsonl label names (None where absent); empty for coco
    class_ids: np.ndarray  # (N,) jsonl class_id (-1 where absent) or coco category_id
    where: np.ndarray  # (N,) line number (jsonl) or 1-based entry number (coco)
    failed_images: int = 0  # jsonl records whose "error" was set
    file_names: list[str | None] = field(default_factory=list)  # coco: per row, else empty
    keyed_by_name: bool = False  # coco records are file names (ids disagreed), not image ids

    @property
    def unit(self) -> str:
        return "line" if self.format == "jsonl" else "entry"


@dataclass
class Detections:
    """Predictions tied to a data set: ground-truth image ids and 0-based class indices."""

    image_ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) xyxy float64
    coco_boxes: np.ndarray  # (N, 4) xywh float64 (as written for COCO results files)
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) int64
    warnings: list[str] = field(default_factory=list)
    matching: str = "by image id"  # how rows found their images: "by image id" / "by file name"

    def __len__(self) -> int:
        return int(self.labels.size)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            image_ids=np.zeros(0, dtype=np.int64),
            boxes=np.zeros((0, 4)),
            coco_boxes=np.zeros((0, 4)),
            scores=np.zeros(0),
            labels=np.zeros(0, dtype=np.int64),
        )


class ImageIndex:
    """Finds a data-set image from a path written in a predictions file.

    Every trailing part of each data-set path is indexed ("a/b/c.jpg", "b/c.jpg", "c.jpg"), so a
    prediction written with an absolute path, a different root or a bare file name still finds
    its image; the longest unambiguous match wins.
    """

    def __init__(self, images: Sequence[tuple[int, str]]) -> None:
        self._index: dict[str, int | None] = {}
        self._shared: dict[str, set[int]] = {}  # ambiguous key -> the images it names
        for image_id, name in images:
            parts = _parts(name)
            for i in range(len(parts)):
                key = "/".join(parts[i:])
                previous = self._index.get(key, image_id)
                if previous != image_id or key in self._shared:
                    shared = self._shared.setdefault(key, set())
                    shared.add(image_id)
                    if previous is not None:
                        shared.add(previous)
                self._index[key] = image_id if previous == image_id else None

    def matches(self, name: str, image_id: int) -> bool:
        """Whether the path `name` can be data-set image `image_id` (its longest indexed
        trailing part names that image, alone or among others)."""
        parts = _parts(name)
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if key in self._index:
                found = self._index[key]
                return found == image_id if found is not None else image_id in self._shared[key]
        return False

    def lookup(self, name: str) -> tuple[int | None, str]:
        """(image id, "") or (None, why not)."""
        parts = _parts(name)
        ambiguous = False
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if key in self._index:
                found = self._index[key]
                if found is not None:
                    return found, ""
                ambiguous = True
        if ambiguous:
            return None, f"image {name!r} matches several data-set images; write its full path"
        return None, f"image {name!r} is not in the data set"


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "."))


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects (2-3x faster JSON
    loading); nothing built here holds reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_predictions(path: str | Path) -> RawPredictions:
    """Parse a predictions file; the format is told apart by its first character."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"predictions file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read predictions file {path}: {exc}") from None
    with no_gc():
        if text.lstrip()[:1] == "[":
            return _read_coco_results(path, text)
        return _read_jsonl(path, text)


def _fail(path: Path, unit: str, where: int, message: str) -> DataError:
    return DataError(f"{path}: {unit} {where}: {message}")


def _read_jsonl(path: Path, text: str) -> RawPredictions:
    keys: list[Any] = []
    record_where: list[int] = []
    counts: list[int] = []
    boxes: list[Any] = []
    scores: list[Any] = []
    labels: list[Any] = []
    class_ids: list[Any] = []
    failed = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise _fail(path, "line", lineno, f"not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
            raise _fail(path, "line", lineno, 'expected an object with an "image" path')
        dets = obj.get("detections")
        if dets is None:
            if obj.get("error"):
                failed += 1
                dets = []
            elif "classes" in obj:
                raise _fail(path, "line", lineno, "classification results cannot be scored")
            else:
                raise _fail(path, "line", lineno, 'no "detections" list')
        if not isinstance(dets, list):
            raise _fail(path, "line", lineno, '"detections" must be a list')
        try:
            boxes.extend([d["box"] for d in dets])
            scores.extend([d["score"] for d in dets])
            labels.extend([d.get("label") for d in dets])
            class_ids.extend([d.get("class_id", -1) for d in dets])
        except (KeyError, TypeError, AttributeError):
            raise _fail(
                path, "line", lineno, 'each detection needs "box", "score" and "label"/"class_id"'
            ) from None
        keys.append(obj["image"])
        record_where.append(lineno)
        counts.append(len(dets))
    count = np.asarray(counts, dtype=np.int64)
    record = np.repeat(np.arange(len(keys), dtype=np.int64), count)
    where = np.asarray(record_where, dtype=np.int64)[record]
    box_array, score_array, id_array = _numeric(path, "line", where, boxes, scores, class_ids)
    return RawPredictions(
        path=path,
        format="jsonl",
        keys=keys,
        record_where=record_where,
        record=record,
        boxes=box_array,
        scores=score_array,
        labels=labels,
        class_ids=id_array,
        where=where,
        failed_images=failed,
    )


def _read_coco_results(path: Path, text: str) -> RawPredictions:
    try:
        rows = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: a COCO results file must be a JSON list")
    try:
        image_ids = [r["image_id"] for r in rows]
        boxes = [r["bbox"] for r in rows]
        scores = [r["score"] for r in rows]
        category_ids = [r["category_id"] for r in rows]
        file_names = [r.get("file_name") for r in rows]
    except (KeyError, TypeError, AttributeError):
        bad = next(i for i, r in enumerate(rows, 1) if not _coco_row_ok(r))
        raise _fail(
            path, "entry", bad, 'needs "image_id", "category_id", "bbox" and "score"'
        ) from None
    where = np.arange(1, len(rows) + 1, dtype=np.int64)
    for n, name in enumerate(file_names, 1):
        if name is not None and not isinstance(name, str):
            raise _fail(path, "entry", n, f"file_name must be a string, got {name!r}")
    ids = _int_array(path, "entry", where, image_ids, "image_id")
    keys, record = np.unique(ids, return_inverse=True)
    box_array, score_array, cat_array = _numeric(path, "entry", where, boxes, scores, category_ids)
    return RawPredictions(
        path=path,
        format="coco",
        keys=keys.tolist(),
        record_where=[],
        record=record.reshape(-1).astype(np.int64),
        boxes=box_array,
        scores=score_array,
        labels=[],
        class_ids=cat_array,
        where=where,
        file_names=file_names,
    )


def _coco_row_ok(row: Any) -> bool:
    return isinstance(row, dict) and all(
        k in row for k in ("image_id", "category_id", "bbox", "score")
    )


def _numeric(
    path: Path,
    unit: str,
    where: np.ndarray,
    boxes: list[Any],
    scores: list[Any],
    ids: list[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays from the collected values; on a type error, find and name the offending row."""
    try:
        box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if box_array.shape[0] != len(boxes):
            raise ValueError
    except (ValueError, TypeError):
        bad = next(i for i, b in enumerate(boxes) if not _is_box(b))
        message = f"box must be 4 numbers, got {boxes[bad]!r}"
        raise _fail(path, unit, int(where[bad]), message) from None
    score_array = _float_array(path, unit, where, scores, "score")
    id_array = _int_array(path, unit, where, ids, "class id")
    return box_array, score_array, id_array


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _float_array(path: Path, unit: str, where: np.ndarray, values: list[Any], name: str) -> Any:
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError):
        bad = next(i for i, v in enumerate(values) if not isinstance(v, (int, float)))
        message = f"{name} must be a number, got {values[bad]!r}"
        raise _fail(path, unit, int(where[bad]), message) from None


def _int_array(path: Path, unit: str, where: np.ndarray, values: list[Any], name: str) -> Any:
    array = np.asarray(values) if values else np.zeros(0, dtype=np.int64)
    if array.dtype.kind in "iu" and array.ndim == 1:
        return array.astype(np.int64)
    for i, value in enumerate(values):
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if not integral or isinstance(value, bool):
            raise _fail(path, unit, int(where[i]), f"{name} must be an integer, got {value!r}")
    return np.asarray(values, dtype=np.int64).reshape(-1)


def resolve_predictions(
    raw: RawPredictions,
    *,
    images: ImageIndex | None,
    image_ids: Sequence[int],
    classes: Sequence[str],
    category_ids: Sequence[int],
    lenient: bool = False,
) -> Detections:
    """Tie raw rows to the data set; bad rows raise DataError, or are dropped with a warning.

    `images` resolves jsonl paths. COCO results name images by `image_id`, unless their rows
    carry `file_name`s that disagree with the data set's names for those ids (as
    `detect --save-coco` numbers images it cannot tie to a data set): then they are matched by
    file name, like jsonl paths. `Detections.matching` says which. An image given twice (two
    jsonl lines, or two COCO file names for one image) is an error; `lenient` keeps the first.
    Classes are matched by label name, else jsonl `class_id` (0-based) or COCO `category_id`.
    """
    issues = _Issues(raw, lenient)
    matching = "by file name" if raw.format == "jsonl" else "by image id"
    if raw.format == "coco" and images is not None and _ids_disagree(raw, images):
        raw = _keyed_by_file_name(raw)
        matching = "by file name"
    record_image = _record_images(raw, images, set(image_ids), issues)
    if raw.format == "jsonl" or matching == "by file name":
        _drop_duplicate_images(raw, record_image, issues)
    det_image = record_image[raw.record] if raw.record.size else np.zeros(0, dtype=np.int64)
    issues.check_rows(det_image < 0, None)
    labels = _class_indices(raw, classes, category_ids, issues)
    boxes, coco_boxes = _box_forms(raw)
    finite = np.isfinite(raw.boxes).all(axis=1) & np.isfinite(raw.scores)
    issues.check_rows(~finite, "box or score is NaN or infinite")
    negative = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    issues.check_rows(negative & finite, "box has a negative width or height")
    keep = ~issues.bad
    return Detections(
        image_ids=det_image[keep],
        boxes=boxes[keep],
        coco_boxes=coco_boxes[keep],
        scores=raw.scores[keep],
        labels=labels[keep],
        warnings=issues.warnings,
        matching=matching,
    )


def _ids_disagree(raw: RawPredictions, images: ImageIndex) -> bool:
    """True when some COCO row's `file_name` is not the data set's image for its `image_id`.

    Raises when ids and names disagree but some rows have no `file_name` to match by."""
    if not any(name is not None for name in raw.file_names):
        return False
    pairs: dict[tuple[int, str], int] = {}  # (record, file name) -> first row
    unnamed = -1
    for row, (record, name) in enumerate(zip(raw.record.tolist(), raw.file_names, strict=True)):
        if name is None:
            unnamed = row if unnamed < 0 else unnamed
        else:
            pairs.setdefault((record, name), row)
    disagree = next(
        ((rec, name, row) for (rec, name), row in pairs.items()
         if not images.matches(name, int(raw.keys[rec]))),
        None,
    )  # fmt: skip
    if disagree is None:
        return False
    record, name, row = disagree
    if unnamed >= 0:
        raise DataError(
            f"{raw.path}: entry {row + 1}: image_id {raw.keys[record]} is not the data set's "
            f"image {name!r}, and entry {unnamed + 1} has no file_name to match by; write the "
            "data set's image ids (`visiontool detect --save-coco --data DATASET`) or a "
            "file_name on every entry"
        )
    return True


def _keyed_by_file_name(raw: RawPredictions) -> RawPredictions:
    """The same rows, one record per `file_name` instead of per `image_id`."""
    keys, record = np.unique(np.asarray(raw.file_names, dtype=object), return_inverse=True)
    return RawPredictions(
        path=raw.path,
        format="coco",
        keys=[str(k) for k in keys.tolist()],
        record_where=[],
        record=record.reshape(-1).astype(np.int64),
        boxes=raw.boxes,
        scores=raw.scores,
        labels=raw.labels,
        class_ids=raw.class_ids,
        where=raw.where,
        failed_images=raw.failed_images,
        file_names=raw.file_names,
        keyed_by_name=True,
    )


def _drop_duplicate_images(raw: RawPredictions, record_image: np.ndarray, issues: _Issues) -> None:
    """Records that resolve to an image an earlier record already gave: an error, or (lenient)
    their rows are dropped and the first record is kept."""
    first_where = _record_first_where(raw)
    order = np.argsort(first_where, kind="stable")
    seen: dict[int, int] = {}  # image id -> record
    unit = raw.unit
    for rec in order.tolist():
        image = int(record_image[rec])
        if image < 0:
            continue
        if image not in seen:
            seen[image] = rec
            continue
        first = seen[image]
        same = raw.keys[first] == raw.keys[rec]
        what = f"image {raw.keys[rec]!r}" + (
            "" if same else f" (the same image as {raw.keys[first]!r})"
        )
        message = f"{what} is already on {unit} {first_where[first]}; each image must appear once"
        if not issues.lenient:
            raise _fail(
                raw.path, unit, int(first_where[rec]),
                f"{message}; remove one, or pass --lenient to keep the first",
            )  # fmt: skip
        rows = raw.record == rec
        issues.report([int(first_where[rec])], f"{message}; kept {unit} {first_where[first]}",
                      int(rows.sum()))  # fmt: skip
        issues.bad |= rows


class _Issues:
    """Collects bad rows: the first one raises (strict) or all are dropped and summarised."""

    def __init__(self, raw: RawPredictions, lenient: bool) -> None:
        self.raw = raw
        self.lenient = lenient
        self.bad = np.zeros(raw.scores.size, dtype=bool)
        self.warnings: list[str] = []

    def report(self, wheres: list[int], message: str, count: int | None = None) -> None:
        if not wheres:
            return
        unit = self.raw.unit
        if not self.lenient:
            hint = LENIENT_HINT
            raise _fail(self.raw.path, unit, wheres[0], f"{message}; {hint}")
        listed = ", ".join(str(w) for w in wheres[:MAX_LISTED])
        more = "..." if len(wheres) > MAX_LISTED else ""
        n = count if count is not None else len(wheres)
        self.warnings.append(
            f"{self.raw.path}: {unit} {listed}{more}: {message}; skipped {n} prediction(s)"
        )

    def check_rows(self, mask: np.ndarray, message: str | None) -> None:
        mask = mask & ~self.bad
        if message is not None and mask.any():
            wheres = np.unique(self.raw.where[mask]).tolist()
            self.report(wheres, message, int(mask.sum()))
        self.bad |= mask


def _record_images(
    raw: RawPredictions, images: ImageIndex | None, known: set[int], issues: _Issues
) -> np.ndarray:
    """Ground-truth image id of each record, -1 for images the data set does not have."""
    out = np.full(len(raw.keys), -1, dtype=np.int64)
    missing: list[tuple[int, str]] = []  # (record, why)
    by_id = raw.format == "coco" and not raw.keyed_by_name
    for i, key in enumerate(raw.keys):
        if by_id:
            found, why = (
                (key, "") if key in known else (None, f"image_id {key} is not in the data set")
            )
        elif images is None:
            raise DataError("predictions name images by path but the data set has no file names")
        else:
            found, why = images.lookup(key)
        if found is None:
            missing.append((i, why))
        else:
            out[i] = found
    if missing:
        first_where = _record_first_where(raw)
        missing.sort(key=lambda item: first_where[item[0]])
        wheres = [int(first_where[i]) for i, _ in missing]
        message = (
            missing[0][1]
            if len(missing) == 1 or not issues.lenient
            else (f"{len(missing)} images are not in the data set, e.g. {missing[0][1]}")
        )
        issues.report(wheres, message, int(np.isin(raw.record, [i for i, _ in missing]).sum()))
    return out


def _record_first_where(raw: RawPredictions) -> np.ndarray:
    """Line (jsonl) or entry (coco) where each record starts."""
    if raw.format == "jsonl":
        return np.asarray(raw.record_where, dtype=np.int64)
    first = np.zeros(len(raw.keys), dtype=np.int64)
    records, index = np.unique(raw.record, return_index=True)
    first[records] = raw.where[index]
    return first


def _class_indices(
    raw: RawPredictions,
    classes: Sequence[str],
    category_ids: Sequence[int],
    issues: _Issues,
) -> np.ndarray:
    """0-based class index per row; unknown names/ids are reported."""
    n = raw.scores.size
    if raw.format == "coco":
        lut = {int(c): i for i, c in enumerate(category_ids)}
        labels = np.fromiter((lut.get(c, -1) for c in raw.class_ids.tolist()), np.int64, n)
        _report_unknown(raw, labels < 0, raw.class_ids, "category_id", issues)
        return labels
    by_name = {name: i for i, name in enumerate(classes)}
    lut = {name: by_name.get(name, -1) for name in set(raw.labels) if name is not None}
    labels = np.fromiter(
        (-2 if name is None else lut[name] for name in raw.labels), dtype=np.int64, count=n
    )
    unnamed = labels == -2
    ids = raw.class_ids
    clash = (labels >= 0) & (ids >= 0) & (ids != labels)  # both given, and they disagree
    if clash.any():
        wheres = np.unique(raw.where[clash]).tolist()
        listed = ", ".join(str(w) for w in wheres[:MAX_LISTED]) + (
            "..." if len(wheres) > MAX_LISTED else ""
        )
        issues.warnings.append(
            f"{raw.path}: {raw.unit} {listed}: {int(clash.sum())} prediction(s) whose class_id "
            "is not the data set's index of their label: scored by the label"
        )
    valid_id = (ids >= 0) & (ids < len(classes))
    labels[unnamed & valid_id] = ids[unnamed & valid_id]
    unknown_name = labels == -1
    if unknown_name.any():
        names = np.asarray(raw.labels, dtype=object)
        _report_unknown(raw, unknown_name, names, "class name", issues)
    _report_unknown(raw, unnamed & ~valid_id, ids, "class_id", issues)
    return labels


def _report_unknown(
    raw: RawPredictions, mask: np.ndarray, values: np.ndarray, what: str, issues: _Issues
) -> None:
    if not mask.any():
        return
    shown = sorted({str(v) for v in values[mask].tolist()})[:MAX_LISTED]
    issues.check_rows(mask, f"unknown {what} {', '.join(repr(s) for s in shown)}")


def _box_forms(raw: RawPredictions) -> tuple[np.ndarray, np.ndarray]:
    """(xyxy, xywh): COCO results keep their xywh exactly as written (bit-identical scoring)."""
    b = raw.boxes
    if raw.format == "coco":
        return xywh_to_xyxy(b), b
    return b, xyxy_to_xywh(b)
