"""Where `detect`'s results go: files written by a background thread, in input order.

`ResultSink` owns the writers (predictions.jsonl, annotated images and videos, COCO results,
YOLO labels)
and one thread that draws, encodes and writes, so the model never waits on disk. It never
touches the model: it takes finished `ImageResult`s (and the decoded image to draw on).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from visiontool.engine.predict.merge import ORDER_KEY
from visiontool.results import ImageResult

ResultCallback = Callable[[ImageResult], None]


class ResultSink:
    """Background thread that draws, encodes and writes results in the order they are put.

    After a result is written, `on_written(result)` runs on the writer thread. An error in
    the thread is raised on the caller's thread by the next `put` or by `close`.
    """

    def __init__(
        self,
        out: Path,
        *,
        category_ids: list[int],
        save_img: bool = True,
        save_txt: bool = False,
        save_conf: bool = False,
        save_coco: bool = False,
        coco_image_ids: Callable[[ImageResult], int | None] | None = None,
        depth: int = 8,
        on_written: ResultCallback | None = None,
        report: Any = None,
        names: Any = None,
        jsonl: Path | None = None,
        append: bool = False,
        ordered: bool = False,
        drawers: int = 1,
    ) -> None:
        """`names`: gives each input its output name (`OutputNames`, or `PlanNames` for a
        resumed run or one process of several); `jsonl`: where result lines go (default
        predictions.jsonl), appended to with `append`; `ordered`: each line carries its
        input's place in the whole plan (`_order`, for merging process parts); `drawers`:
        threads that draw and encode annotated images ahead of the writer (OpenCV releases
        the GIL), for machines where one thread cannot keep up with the model."""
        from visiontool.io.writers import (
            CocoResultsWriter,
            ImageWriter,
            JsonlWriter,
            OutputNames,
            VideoOutputs,
            YoloTxtWriter,
        )

        self.on_written = on_written
        self.report = report  # an io.report.DetectReport, fed each result, or None
        self.out = out
        self.names = names if names is not None else OutputNames()  # one name per input
        self.ordered = ordered
        self.jsonl = JsonlWriter(jsonl or out / "predictions.jsonl", append=append)
        from visiontool.io.paths import WriteGuard

        guard = WriteGuard(out)  # a link inside --out never carries files out of it
        self.images = ImageWriter(out, guard=guard) if save_img else None
        self.videos = VideoOutputs(out, guard=guard) if save_img else None
        self._video_base: tuple[str, Any] | None = None  # (rel, name) of the video being read
        self.coco = (
            CocoResultsWriter(out / "coco_results.json", category_ids, coco_image_ids)
            if save_coco
            else None
        )
        self.txt = (
            YoloTxtWriter(out / "labels", save_conf=save_conf, guard=guard) if save_txt else None
        )
        self.queue: queue.Queue[tuple[ImageResult, Any, Any] | None] = queue.Queue(maxsize=depth)
        self.pool = ThreadPoolExecutor(drawers, "visiontool-draw") if drawers > 1 else None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="visiontool-writer", daemon=True)
        self.thread.start()

    def put(self, result: ImageResult, image: Any) -> None:
        """Queue `result` for writing (blocks while the queue is full); `image` is the decoded
        uint8 (3, H, W) tensor to draw on, or None."""
        if self.error is not None:
            raise self.error
        drawing = self.pool.submit(self._draw, result, image) if self.pool is not None else None
        self.queue.put((result, image, drawing))

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                self._write(*job)
            except BaseException as exc:  # surfaced on the main thread by put()/close()
                self.error = exc

    def _draw(self, result: ImageResult, image: Any) -> tuple[Any, bytes | None, float]:
        """(annotated BGR array or None, the encoded still image or None, ms): the part of
        writing that needs no order (a drawer thread, or the writer itself)."""
        start = time.perf_counter()
        drawn = encoded = None
        if image is not None and result.ok and (self.images is not None or self.report is not None):
            import cv2

            from visiontool.io.writers import annotate

            try:
                drawn = annotate(result, image)
                if result.frame is None and self.images is not None:
                    encoded = self.images.encode(result, drawn)
            except (ValueError, OverflowError, MemoryError, cv2.error) as exc:
                # this picture only (e.g. 1 x 2,000,000 px: past what PNG/JPEG encoders take);
                # its detections are still written, the run goes on, and it counts as failed
                reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ""
                result.error = f"cannot save the annotated image ({reason or type(exc).__name__})"
                drawn = encoded = None
        return drawn, encoded, (time.perf_counter() - start) * 1000

    def _write(self, result: ImageResult, image: Any, drawing: Any) -> None:
        drawn, encoded, draw_ms = (
            drawing.result() if drawing is not None else self._draw(result, image)
        )
        start = time.perf_counter()
        first_frame = result.frame is not None and (
            self._video_base is None or self._video_base[0] != result.rel
        )
        if result.frame is not None:
            saved = self._write_frame(result, image, drawn)
        else:
            if self.videos is not None:
                self.videos.finish()  # a video's end (its error, if any, comes next)
            base = self.names.base(result.rel)  # named even when failed: same on a re-run
            saved = []
            if self.images is not None and image is not None:
                saved.append(self.images.write(result, image, base, bgr=drawn, encoded=encoded))
            if self.txt is not None:
                saved.append(self.txt.write(result, base))
        if self.report is not None and (result.frame is None or first_frame):
            link = next((p for p in saved if p is not None), None)
            self.report.add(result, drawn, link.relative_to(self.out).as_posix() if link else None)
        if self.coco is not None:
            self.coco.write(result)
        result.speed["write"] = draw_ms + (time.perf_counter() - start) * 1000
        self.jsonl.write(
            result,
            saved=[p.relative_to(self.out).as_posix() for p in saved if p is not None],
            extra={ORDER_KEY: self.names.position(result.rel)} if self.ordered else None,
        )
        if self.on_written is not None:
            self.on_written(result)

    def _write_frame(self, result: ImageResult, image: Any, drawn: Any) -> list[Any]:
        """A video frame: into its input's annotated video (named once per input, listed in
        the first frame's line) and, with --save-txt, labels/<name>_<frame>.txt."""
        if self._video_base is None or self._video_base[0] != result.rel:
            self._video_base = (result.rel, self.names.base(result.rel))
        base = self._video_base[1]
        saved = []
        if self.videos is not None and image is not None:
            saved.append(self.videos.write(result, image, base, bgr=drawn))
        if self.txt is not None:
            saved.append(self.txt.write(result, base.with_name(f"{base.name}_{result.frame}")))
        return saved

    def close(self) -> None:
        """Write what is queued, stop the thread, close the files; raise a writer error."""
        self.queue.put(None)
        self.thread.join()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        for writer in (self.videos, self.jsonl, self.coco, self.txt):
            if writer is not None:
                writer.close()
        if self.error is not None:
            raise self.error
