"""Result writers: predictions.jsonl, coco_results.json, YOLO label files, annotated images
and videos.

Writers consume `ImageResult`s and never touch the model. JSONL lines are flushed as they come
so a killed run keeps everything done so far; whole-file outputs are written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from visiontool.io.atomic import write_bytes
from visiontool.ops.boxes import xyxy_to_cxcywh, xyxy_to_xywh
from visiontool.results import ImageResult


class JsonlWriter:
    """predictions.jsonl: one JSON object per image, flushed per line."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[str] = path.open("a" if append else "w", encoding="utf-8")

    def write(
        self,
        result: ImageResult,
        saved: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """One line; `saved` (the per-image files written for it, relative to the output
        folder) is recorded so `--exist-ok` can later remove exactly these files; `extra`
        keys are added (a process part's `_order`)."""
        data = result.to_dict()
        if saved:
            data["saved"] = saved
        if extra:
            data.update(extra)
        self._handle.write(json.dumps(data) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class CocoResultsWriter:
    """coco_results.json in the COCO results format, streamed to a temp file then renamed.

    `image_id` is what `image_ids(result)` returns (the data set's id, with `detect --data`);
    without it (or when it returns None), the file stem when it is a number (COCO's own
    naming), else the 1-based position of the image in the run. Each entry also carries
    `file_name` (the image's relative name), which `eval` matches by when ids disagree.
    """

    def __init__(
        self,
        path: Path,
        category_ids: list[int],
        image_ids: Callable[[ImageResult], int | None] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.category_ids = category_ids
        self.image_ids = image_ids
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._handle: IO[str] = self._tmp.open("w", encoding="utf-8")
        self._handle.write("[")
        self._first = True
        self._count = 0

    def write(self, result: ImageResult) -> None:
        self._count += 1
        if not result.ok or not result.detections:
            return
        image_id = self.image_ids(result) if self.image_ids is not None else None
        if image_id is None:
            stem = PurePosixPath(result.rel).stem
            image_id = int(stem) if stem.isdigit() else self._count
        for det in result.detections:
            entry = {
                "image_id": image_id,
                "file_name": result.rel,
                "category_id": self.category_ids[det.class_id],
                # from the corners as predictions.jsonl rounds them, so a coco_results.json
                # rebuilt from those lines (--resume, torchrun) is byte-identical
                "bbox": [round(v, 2) for v in xyxy_to_xywh(tuple(round(v, 2) for v in det.box))],
                "score": round(det.score, 5),
            }
            self._handle.write(("" if self._first else ",\n") + json.dumps(entry))
            self._first = False

    def close(self) -> None:
        self._handle.write("]\n")
        self._handle.close()
        os.replace(self._tmp, self.path)


class YoloTxtWriter:
    """labels/<rel>.txt: `class cx cy w h [conf]`, normalised, one line per detection."""

    def __init__(self, folder: Path, *, save_conf: bool = False, guard: Any = None) -> None:
        self.folder = folder
        self.save_conf = save_conf
        self.guard = guard  # io.paths.WriteGuard: nothing written through a link out of --out

    def write(self, result: ImageResult, base: PurePosixPath | None = None) -> Path | None:
        """Write labels/<base>.txt (`base`: from `OutputNames`; default the input's name)."""
        if not result.ok or result.detections is None:
            return None
        lines = []
        scale = (result.width, result.height, result.width, result.height)
        for det in result.detections:
            values = [v / s for v, s in zip(xyxy_to_cxcywh(tuple(det.box)), scale, strict=True)]
            line = f"{det.class_id} " + " ".join(f"{v:.6f}" for v in values)
            lines.append(line + (f" {det.score:.5f}" if self.save_conf else ""))
        base = base if base is not None else PurePosixPath(result.rel).with_suffix("")
        target = self.folder / base.with_name(base.name + ".txt")
        if self.guard is not None:
            self.guard.check(target)
        return write_bytes(target, ("\n".join(lines) + ("\n" if lines else "")).encode())

    def close(self) -> None:
        pass


class ImageWriter:
    """Annotated copies under the output folder at the input's relative path."""

    def __init__(self, folder: Path, *, guard: Any = None) -> None:
        self.folder = folder
        self.guard = guard  # io.paths.WriteGuard: nothing written through a link out of --out

    def write(
        self,
        result: ImageResult,
        image: Any,
        base: PurePosixPath | None = None,
        bgr: Any = None,
        encoded: bytes | None = None,
    ) -> Path | None:
        """Write <base><suffix> (`base`: from `OutputNames`; default the input's name); `bgr`:
        the image already annotated (`annotate`), else it is drawn here; `encoded`: the file's
        bytes already made (`encode`)."""
        from visiontool.io.draw import output_suffix

        if not result.ok or image is None:
            return None
        rel = PurePosixPath(result.rel)
        suffix = output_suffix(rel.suffix)
        if encoded is None:
            encoded = self.encode(result, annotate(result, image) if bgr is None else bgr)
        base = base if base is not None else rel.with_suffix("")
        target = self.folder / base.with_name(base.name + suffix)
        if self.guard is not None:
            self.guard.check(target)
        return write_bytes(target, encoded)

    @staticmethod
    def encode(result: ImageResult, bgr: Any) -> bytes:
        """The annotated image's file bytes, in the format its output name gets."""
        from visiontool.io.draw import encode_image, output_suffix

        return encode_image(bgr, output_suffix(PurePosixPath(result.rel).suffix))


def annotate(result: ImageResult, image: Any) -> Any:
    """The decoded uint8 (3, H, W) image as a BGR array with the result drawn on it."""
    from visiontool.io.draw import draw_classes, draw_detections, to_bgr_array

    bgr = to_bgr_array(image)
    if result.classes is not None:
        draw_classes(bgr, result.classes)
    else:
        draw_detections(bgr, result.detections or [])
    return bgr


class VideoOutputs:
    """Annotated videos under the output folder, `<base>.mp4`, one per video input.

    Frames of one input arrive together, in order; the video is finished (and renamed into
    place) when a result of another input arrives, or at `close` (also on Ctrl-C, so an
    interrupted run leaves a video that plays). Frames at the source's fps / --vid-stride.
    """

    def __init__(self, folder: Path, *, guard: Any = None) -> None:
        self.folder = folder
        self.guard = guard  # io.paths.WriteGuard: nothing written through a link out of --out
        self._rel: str | None = None
        self._writer: Any = None

    def write(
        self, result: ImageResult, image: Any, base: PurePosixPath, bgr: Any = None
    ) -> Path | None:
        """Add the frame (`bgr`: already annotated, else drawn here); returns the video's path
        for its first frame (None after)."""
        from visiontool.io.video import VideoWriter

        first = result.rel != self._rel
        if first:
            self.finish()
            info = result.video
            fps = info.fps / max(1, info.stride) if info is not None else 30.0
            target = self.folder / base.with_name(base.name + ".mp4")
            if self.guard is not None:
                self.guard.check(target)
            self._writer = VideoWriter(target, fps=fps, size=(result.width, result.height))
            self._rel = result.rel
        self._writer.write(annotate(result, image) if bgr is None else bgr)
        return self._writer.path if first else None

    def finish(self) -> Path | None:
        """Close the open video, if any (a result of another input arrived, or the end)."""
        path = self._writer.close() if self._writer is not None else None
        self._rel, self._writer = None, None
        return path

    def close(self) -> None:
        self.finish()


class OutputNames:
    """The name every per-image output of one input gets: its relative path without the
    suffix, made unique by that stem (case-insensitively, for case-insensitive disks) with
    `_2`, `_3`... So a.gif + a.png, or b.jpg + b.png, become a/a_2 and b/b_2 in every output
    (annotated image, labels/*.txt), and one input gets the same name everywhere."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def base(self, rel: str) -> PurePosixPath:
        path = PurePosixPath(rel)
        stem = path.with_suffix("") if path.suffix and path.stem else path
        candidate, index = stem, 2
        while candidate.as_posix().casefold() in self._seen:
            candidate = stem.with_name(f"{stem.name}_{index}")
            index += 1
        self._seen.add(candidate.as_posix().casefold())
        return candidate


class PlanNames:
    """`OutputNames` of a whole plan, for the results of its selected items.

    Results arrive in plan order, so the plan is walked once more in step with them, naming
    every item (skipped and other processes' ones too): a resumed run, or one process of
    several, names each input as one whole run would, and no two processes pick one name.
    `position(rel)` is the item's 0-based place in the whole plan (negative for an input the
    walk did not find: a folder changed during the run)."""

    def __init__(self, plan: Any) -> None:
        self._walk = plan.walk()
        self._names = OutputNames()
        self._current: tuple[str, PurePosixPath, int] | None = None
        self._lost = 0

    def _advance(self, rel: str) -> tuple[str, PurePosixPath, int]:
        if self._current is not None and self._current[0] == rel:
            return self._current  # another frame of the same video
        for index, item, _ in self._walk:
            name = self._names.base(item.rel)
            if item.rel == rel:
                self._current = (rel, name, index)
                return self._current
        # not in this walk (a folder changed during the run): named after the others
        self._lost += 1
        self._current = (rel, self._names.base(rel), -self._lost)
        return self._current

    def base(self, rel: str) -> PurePosixPath:
        return self._advance(rel)[1]

    def position(self, rel: str) -> int:
        return self._advance(rel)[2]
