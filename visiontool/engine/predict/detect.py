"""A detection (or classification) run: sources -> decode -> batch -> model -> writers.

`run_detect` is what `visiontool detect` calls and what Python users call. Decoding happens in
DataLoader workers (or a thread on small machines), inference in up to `inflight` model
threads, and drawing/encoding/writing in a background thread, so the model never waits on
disk; results still come out in input order. Failed images are reported and skipped.
"""

from __future__ import annotations

import contextlib
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from visiontool import __version__
from visiontool.engine.predict.inflight import DEFAULT_INFLIGHT, map_in_order
from visiontool.engine.predict.stream import DecodedItem
from visiontool.errors import ConfigError, UnknownName
from visiontool.io.images import DEFAULT_MAX_PIXELS
from visiontool.results import ClassScore, Detection, ImageResult
from visiontool.runtime import default_workers


@dataclass
class DetectConfig:
    sources: list[str]
    out: Path | None = None  # default: the next free runs/detect/exp{,2,...}
    exist_ok: bool = False
    model: str | None = None
    weights: str | None = "DEFAULT"
    device: str = "auto"
    conf: float = 0.25
    iou: float | None = None
    max_det: int = 300
    classes: list[str] | None = None
    imgsz: int | None = None
    batch: int = 1
    workers: int | None = None
    inflight: int | None = None  # batches in the model at once (default 2)
    half: bool = False
    recursive: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    topk: int = 5
    save_img: bool = True
    save_txt: bool = False
    save_conf: bool = False
    save_coco: bool = False
    strict: bool = False
    seed: int = 0  # makes --weights none reproducible


@dataclass
class DetectSummary:
    """What a run did; written to summary.json."""

    model: str
    weights: str
    device: str
    task: str
    out: str
    inflight: int = 1  # batches in the model at once
    images: int = 0
    failed: int = 0
    detections: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)  # totals per stage
    total_s: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        import torch
        import torchvision

        done = max(1, self.images)
        return {
            "model": self.model,
            "weights": self.weights,
            "device": self.device,
            "task": self.task,
            "out": self.out,
            "inflight": self.inflight,
            "versions": {
                "visiontool": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
            "counts": {
                "images": self.images,
                "ok": self.images - self.failed,
                "failed": self.failed,
                "detections": self.detections,
            },
            "failures": self.failures,
            "times": {
                "total_s": round(self.total_s, 3),
                "images_per_s": round(self.images / self.total_s, 3) if self.total_s else 0.0,
                "per_image_ms": {k: round(v / done, 3) for k, v in self.stage_ms.items()},
            },
            "stopped_early": self.stopped_early,
        }


ResultCallback = Callable[[ImageResult], None]


def run_detect(
    config: DetectConfig,
    *,
    on_result: ResultCallback | None = None,
    on_log: Callable[[str], None] | None = None,
) -> DetectSummary:
    """Run the whole pipeline; return the summary. Raises VisiontoolError on setup errors."""
    import torch

    from visiontool.engine.predict.predictor import Predictor
    from visiontool.io.atomic import write_json
    from visiontool.io.sources import first_item, plan_sources
    from visiontool.models.loader import load_model
    from visiontool.runtime import resolve_device

    _validate(config)
    log = on_log or (lambda message: None)
    plan = plan_sources(config.sources, recursive=config.recursive)
    first_item(plan)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    loaded = load_model(config.model, config.weights, device=device)
    class_ids = resolve_classes(config.classes, loaded.info.classes)
    if loaded.info.weights.startswith("none"):
        log("running with random weights (--weights none): predictions are meaningless")
    if config.half and device.type != "cuda":
        log("--half ignored on CPU (autocast is GPU-only here)")
    predictor = Predictor(
        loaded,
        conf=config.conf,
        iou=config.iou,
        max_det=config.max_det,
        classes=class_ids,
        imgsz=config.imgsz,
        half=config.half,
    )
    out = _output_dir(config)
    summary = DetectSummary(
        model=loaded.info.name,
        weights=loaded.info.weights,
        device=str(device),
        task=loaded.info.task,
        out=str(out),
        inflight=config.inflight or DEFAULT_INFLIGHT,
    )
    sink = ResultSink(config, out, loaded.info.category_ids, summary, on_result)
    started = time.perf_counter()
    try:
        _loop(config, plan, predictor, sink, summary, pin=device.type == "cuda")
    except KeyboardInterrupt:  # what was done is still written, and marked incomplete
        summary.stopped_early = True
        raise
    finally:
        sink.close()
        summary.total_s = time.perf_counter() - started
        write_json(out / "summary.json", summary.to_dict())
    return summary


def _output_dir(config: DetectConfig) -> Path:
    from visiontool.io.paths import run_dir

    out = run_dir(config.out, "detect", exist_ok=config.exist_ok)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _validate(config: DetectConfig) -> None:
    if not 0.0 <= config.conf <= 1.0:
        raise ConfigError(f"--conf must be in [0, 1], got {config.conf}")
    if config.batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {config.batch}")
    if config.inflight is not None and config.inflight < 1:
        raise ConfigError(f"--inflight must be >= 1, got {config.inflight}")
    if config.max_det < 1:
        raise ConfigError(f"--max-det must be >= 1, got {config.max_det}")
    if config.imgsz is not None and config.imgsz < 32:
        raise ConfigError(f"--imgsz must be >= 32, got {config.imgsz}")


def resolve_classes(selected: list[str] | None, classes: list[str]) -> list[int] | None:
    """--classes accepts names or ids, comma-separated or repeated."""
    if not selected:
        return None
    ids = []
    for token in (t.strip() for item in selected for t in item.split(",")):
        if not token:
            continue
        if token.isdigit():
            if int(token) >= len(classes):
                raise ConfigError(f"--classes: id {token} out of range (model has {len(classes)})")
            ids.append(int(token))
        elif token in classes:
            ids.append(classes.index(token))
        else:
            raise UnknownName("class", token, classes)
    return ids


def _loop(
    config: DetectConfig,
    plan: Any,
    predictor: Any,
    sink: ResultSink,
    summary: DetectSummary,
    *,
    pin: bool,
) -> None:
    """Decode -> batch -> model (several batches at once) -> sink, in input order. A failed
    image travels alone and is reported in its place."""
    from visiontool.engine.predict.stream import decoded_stream

    workers = default_workers() if config.workers is None else config.workers
    items = decoded_stream(plan, workers=workers, max_pixels=config.max_pixels, pin_memory=pin)
    results = map_in_order(
        partial(_predict, predictor),
        _batches(items, config.batch),
        summary.inflight,
        skip=lambda batch: batch[0].error is not None,
    )
    with contextlib.closing(results):
        for batch, outcome in results:
            if outcome is None:
                sink.put(_failed(batch[0]), None)
                if config.strict:
                    summary.stopped_early = True
                    return
                continue
            predictions, batch_ms = outcome
            summary.stage_ms["inference"] = summary.stage_ms.get("inference", 0.0) + batch_ms
            for item, prediction in zip(batch, predictions, strict=True):
                result = to_result(item, prediction, predictor.loaded.info, topk=config.topk)
                result.speed["inference"] = batch_ms / len(batch)
                sink.put(result, item.image if config.save_img else None)


def _predict(predictor: Any, batch: list[DecodedItem]) -> tuple[list[Any], float]:
    """Runs in a model thread: the batch's predictions and its model time in ms."""
    start = time.perf_counter()
    predictions = predictor.predict([item.image for item in batch])
    return predictions, (time.perf_counter() - start) * 1000


def _batches(items: Iterator[DecodedItem], size: int) -> Iterator[list[DecodedItem]]:
    """Group consecutive decoded images of one shape; a failed item travels alone.

    Batching only equal shapes keeps results identical for any --batch: torchvision pads a
    batch to its largest image, and padding would change what the backbone sees.
    """
    pending: list[DecodedItem] = []
    for item in items:
        if item.error is not None:
            if pending:
                yield pending
                pending = []
            yield [item]
            continue
        if pending and (len(pending) >= size or pending[0].image.shape != item.image.shape):
            yield pending
            pending = []
        pending.append(item)
    if pending:
        yield pending


def _failed(item: DecodedItem) -> ImageResult:
    return ImageResult(
        image=item.path, rel=item.rel, error=item.error, speed={"decode": item.decode_ms}
    )


def to_result(item: DecodedItem, prediction: Any, info: Any, *, topk: int) -> ImageResult:
    """Turn a model prediction into an `ImageResult` with labels."""
    height, width = int(item.image.shape[1]), int(item.image.shape[2])
    result = ImageResult(
        image=item.path, rel=item.rel, width=width, height=height, speed={"decode": item.decode_ms}
    )
    if prediction.probs is not None:
        k = min(topk, prediction.probs.numel())
        scores, ids = prediction.probs.topk(k)
        result.classes = [
            ClassScore(int(i), info.classes[int(i)], float(s))
            for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
        ]
        return result
    boxes = prediction.boxes.tolist()
    result.detections = [
        Detection(tuple(box), float(score), int(cid), info.classes[int(cid)])
        for box, score, cid in zip(
            boxes, prediction.scores.tolist(), prediction.class_ids.tolist(), strict=True
        )
    ]
    return result


class ResultSink:
    """Background thread that draws, encodes and writes results in input order."""

    def __init__(
        self,
        config: DetectConfig,
        out: Path,
        category_ids: list[int],
        summary: DetectSummary,
        on_result: ResultCallback | None,
    ) -> None:
        from visiontool.io.writers import (
            CocoResultsWriter,
            ImageWriter,
            JsonlWriter,
            YoloTxtWriter,
        )

        self.summary = summary
        self.on_result = on_result
        self.jsonl = JsonlWriter(out / "predictions.jsonl")
        self.images = ImageWriter(out) if config.save_img else None
        self.coco = (
            CocoResultsWriter(out / "coco_results.json", category_ids) if config.save_coco else None
        )
        self.txt = (
            YoloTxtWriter(out / "labels", save_conf=config.save_conf) if config.save_txt else None
        )
        self.queue: queue.Queue[tuple[ImageResult, Any] | None] = queue.Queue(
            maxsize=max(8, 2 * config.batch)
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="visiontool-writer", daemon=True)
        self.thread.start()

    def put(self, result: ImageResult, image: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((result, image))

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                self._write(*job)
            except BaseException as exc:  # surfaced on the main thread by put()/close()
                self.error = exc

    def _write(self, result: ImageResult, image: Any) -> None:
        start = time.perf_counter()
        if self.images is not None and image is not None:
            self.images.write(result, image)
        for writer in (self.coco, self.txt):
            if writer is not None:
                writer.write(result)
        result.speed["write"] = (time.perf_counter() - start) * 1000
        self.jsonl.write(result)
        self._count(result)
        if self.on_result is not None:
            self.on_result(result)

    def _count(self, result: ImageResult) -> None:
        summary = self.summary
        summary.images += 1
        for stage, ms in result.speed.items():
            if stage != "inference":
                summary.stage_ms[stage] = summary.stage_ms.get(stage, 0.0) + ms
        if result.error is not None:
            summary.failed += 1
            summary.failures.append({"image": result.image, "error": result.error})
        else:
            summary.detections += len(result.detections or [])

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        for writer in (self.jsonl, self.coco, self.txt):
            if writer is not None:
                writer.close()
        if self.error is not None:
            raise self.error
