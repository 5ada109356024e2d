"""One detect output from several pieces: processes under torchrun, and runs resumed.

Each process of a torchrun job writes its results to `predictions.rank<R>.jsonl`, every line
with its input's place in the whole plan (`_order`); rank 0 merges the parts into
predictions.jsonl in input order (`merge_parts`, a k-way merge: memory stays flat). A run that
was killed before merging leaves its parts, and `detect --resume` folds them in first.
predictions.jsonl is then the one record of what was done: `count_lines` makes summary.json's
counts from it, and `write_coco_from_lines` its coco_results.json.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontool.results import Detection, ImageResult

PREDICTIONS = "predictions.jsonl"
PART_GLOB = "predictions.rank*.jsonl"
ORDER_KEY = "_order"


def part_path(out: Path, rank: int) -> Path:
    """Where process `rank` writes its results."""
    return out / f"predictions.rank{rank}.jsonl"


def repair_tail(path: Path) -> int:
    """Cut a partial last line (a process killed mid-write); returns the bytes dropped."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as handle:
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return 0
        keep = _last_newline_end(handle, size)
        handle.truncate(keep)
    return size - keep


def _last_newline_end(handle: Any, size: int) -> int:
    """The offset just past the last newline in the file (0 if there is none)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        handle.seek(start)
        chunk = handle.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _ordered_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                data = json.loads(line)
                order = int(data.pop(ORDER_KEY))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not a line of ours: dropped rather than guessed at
            yield order, json.dumps(data)


def merge_parts(out: Path) -> int:
    """Append every `predictions.rank*.jsonl` in `out` to predictions.jsonl in input order,
    then remove the parts; returns the lines added."""
    parts = sorted(out.glob(PART_GLOB))
    if not parts:
        return 0
    target = out / PREDICTIONS
    repair_tail(target)
    for part in parts:
        repair_tail(part)
    added = 0
    with target.open("a", encoding="utf-8") as handle:
        for _, line in heapq.merge(*(_ordered_lines(p) for p in parts), key=lambda x: x[0]):
            handle.write(line + "\n")
            added += 1
        handle.flush()
        os.fsync(handle.fileno())
    for part in parts:
        part.unlink(missing_ok=True)
    return added


@dataclass
class LineCounts:
    """What predictions.jsonl holds: summary.json's counts."""

    images: int = 0
    failed: int = 0
    detections: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)  # image path -> lines

    def add(self, data: dict[str, Any]) -> None:
        image = str(data.get("image", ""))
        self.images += 1
        self.done[image] = self.done.get(image, 0) + 1
        if data.get("error") is not None:
            self.failed += 1
            self.failures.append({"image": image, "error": str(data["error"])})
        else:
            self.detections += len(data.get("detections") or [])


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a predictions.jsonl (lines that are not objects are skipped)."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                yield data


def count_lines(path: Path) -> LineCounts:
    counts = LineCounts()
    for data in read_lines(path):
        counts.add(data)
    return counts


def write_coco_from_lines(
    predictions: Path,
    target: Path,
    category_ids: list[int],
    rel_of: Callable[[str], str],
    image_ids: Callable[[ImageResult], int | None] | None = None,
) -> None:
    """coco_results.json from predictions.jsonl, as the streaming writer of one whole run
    would write it (image ids from `image_ids`, else the file stem or the line's place)."""
    from visiontool.io.writers import CocoResultsWriter

    writer = CocoResultsWriter(target, category_ids, image_ids)
    try:
        for data in read_lines(predictions):
            writer.write(result_from_line(data, rel_of))
    finally:
        writer.close()


def result_from_line(data: dict[str, Any], rel_of: Callable[[str], str]) -> ImageResult:
    """An `ImageResult` with what a predictions.jsonl line holds (boxes, not timings)."""
    image = str(data.get("image", ""))
    detections = []
    for det in data.get("detections") or []:
        try:
            box = tuple(float(v) for v in det["box"])
            detections.append(
                Detection(box, float(det["score"]), int(det["class_id"]), str(det["label"]))
            )
        except (KeyError, TypeError, ValueError):
            continue
    return ImageResult(
        image=image, rel=rel_of(image), width=int(data.get("width") or 0),
        height=int(data.get("height") or 0), detections=detections, error=data.get("error"),
    )  # fmt: skip


def reorder_lines(path: Path, positions: dict[str, list[int]]) -> bool:
    """Rewrite predictions.jsonl in input order when it is not (a resumed run whose processes
    stopped unevenly left holes that the resume filled at the end), so it, and the
    coco_results.json ids taken from line positions, equal one whole run's. `positions`: each
    image path's places in the plan (a path listed twice has two). Lines of images not in
    the plan keep their order, after the others. Returns whether it rewrote the file."""
    from visiontool.io.atomic import atomic_write

    taken: dict[str, int] = {}
    keys: list[tuple[int, int, int]] = []  # (place, offset, length) of each line
    offset = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                image = str(json.loads(raw).get("image", ""))
            except (ValueError, AttributeError):
                image = ""
            seen = taken.get(image, 0)
            places = positions.get(image, ())
            taken[image] = seen + 1
            place = places[seen] if seen < len(places) else 1 << 62
            keys.append((place, offset, len(raw)))
            offset += len(raw)
    if all(a[0] <= b[0] for a, b in zip(keys, keys[1:], strict=False)):
        return False
    keys.sort(key=lambda k: (k[0], k[1]))

    def write(target: Any) -> None:
        with path.open("rb") as source:
            for _, at, length in keys:
                source.seek(at)
                target.write(source.read(length))

    atomic_write(path, write)
    return True
