"""The prediction pipeline as a generator: inputs -> decode -> batch -> model -> `ImageResult`.

`stream_results` is the one pipeline: `visiontool.predict` hands its results to the caller and
`visiontool detect` drains it into its writers (`sinks.ResultSink`). Decoding runs ahead in a
background thread or DataLoader workers, up to `inflight` batches run in model threads, and
results come out in input order, one at a time, as they are made: memory stays flat on any
number of images. A failed image is a result with `.error` set, in its place. Closing the
generator (or breaking out of a loop and dropping it) stops decoding and the model threads.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from visiontool.engine.predict.inflight import DEFAULT_INFLIGHT, map_in_order
from visiontool.engine.predict.stream import DecodedItem
from visiontool.errors import ConfigError, UnknownName
from visiontool.io.images import DEFAULT_MAX_PIXELS
from visiontool.results import Detection, ImageResult
from visiontool.runtime import check_imgsz, check_loader, default_workers

Log = Callable[[str], None]


def predict(
    sources: Any,
    *,
    model: Any = None,
    weights: str | None = "DEFAULT",
    conf: float | None = None,
    iou: float | None = None,
    max_det: int = 300,
    classes: list[str] | None = None,
    imgsz: int | None = None,
    batch: int = 1,
    device: str = "auto",
    half: bool = False,
    topk: int = 5,
    workers: int | None = None,
    inflight: int | None = None,
    recursive: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    seed: int = 0,
    vid_stride: int = 1,
    tile: int | None = None,
    tile_overlap: float = 0.2,
    merge: str = "nms",
    on_log: Log | None = None,
) -> Iterator[ImageResult]:
    """Predict `sources` and yield one `ImageResult` per input, in input order, as they are
    made. Writes nothing to disk.

    `sources` is a path, folder, glob or `.txt` list, or a list of these (as `detect` takes
    them), or any other iterable, consumed lazily, of image paths and decoded images (PIL
    images, uint8 numpy (H, W, 3) arrays, uint8 torch (3, H, W) tensors). `model` is a registry
    name or a model from `load_model` (reused as is; `weights` and `device` then do not
    apply). Video files, camera indexes and stream URLs give one result per processed frame
    (every `vid_stride`-th; `.frame`, `.time_s`). `tile` predicts large images in tiles
    (`engine.predict.tiling`). The other options are `detect`'s. Setup
    errors (unknown model, bad option, missing path) raise here; an unreadable image is
    yielded with `.error` set. Close the returned generator (or use `contextlib.closing`) to
    stop early.
    """
    check_options(conf=conf, batch=batch, inflight=inflight, max_det=max_det, imgsz=imgsz,
                  workers=workers, topk=topk, vid_stride=vid_stride, tile=tile,
                  tile_overlap=tile_overlap, merge=merge)  # fmt: skip
    inputs = _as_inputs(sources, recursive=recursive)
    predictor = make_predictor(
        model=model, weights=weights, device=device, conf=conf, iou=iou, max_det=max_det,
        classes=classes, imgsz=imgsz, half=half, seed=seed, on_log=on_log, tile=tile,
        tile_overlap=tile_overlap, merge=merge, batch=batch,
    )  # fmt: skip
    stream = stream_results(
        inputs, predictor, batch=batch, workers=workers, inflight=inflight, topk=topk,
        max_pixels=max_pixels, vid_stride=vid_stride,
    )  # fmt: skip
    return _results_only(stream)


def _as_inputs(sources: Any, *, recursive: bool) -> Any:
    """Source specs (a path or a list of paths) become a checked, re-walkable `SourcePlan`
    (folders, globs and lists expanded, as in `detect`); one decoded image (an array, tensor
    or PIL image) is a list of one; any other iterable is walked once."""
    from visiontool.io.sources import plan_sources

    if hasattr(sources, "shape") or hasattr(sources, "getpixel"):  # one array or PIL image
        return [sources]
    specs = [sources] if isinstance(sources, (str, Path)) else sources
    if (
        isinstance(specs, (list, tuple))
        and specs
        and all(isinstance(s, (str, Path)) for s in specs)
    ):
        return plan_sources([str(s) for s in specs], recursive=recursive)
    return sources


def _results_only(stream: Iterator[tuple[ImageResult, Any]]) -> Iterator[ImageResult]:
    with contextlib.closing(stream):
        for result, _ in stream:
            yield result


def check_options(
    *,
    conf: float | None,
    batch: int,
    inflight: int | None,
    max_det: int,
    imgsz: int | None,
    workers: int | None = None,
    topk: int = 5,
    vid_stride: int = 1,
    tile: int | None = None,
    tile_overlap: float = 0.2,
    merge: str = "nms",
    decode: str = "auto",
) -> None:
    """Range checks shared by `predict` and `detect` (ConfigError, exit 2)."""
    from visiontool.engine.predict.tiling import check_tiling

    check_tiling(tile, tile_overlap, merge)
    if decode not in ("auto", "cpu", "device"):
        raise ConfigError(f"--decode must be auto, cpu or device, got {decode!r}")
    if vid_stride < 1:
        raise ConfigError(f"--vid-stride must be >= 1, got {vid_stride}")
    check_loader(workers, batch)
    if topk < 1:
        raise ConfigError(f"--topk must be >= 1, got {topk}")
    if conf is not None and not 0.0 <= conf <= 1.0:
        raise ConfigError(f"--conf must be in [0, 1], got {conf}")
    if inflight is not None and inflight < 1:
        raise ConfigError(f"--inflight must be >= 1, got {inflight}")
    if max_det < 1:
        raise ConfigError(f"--max-det must be >= 1, got {max_det}")
    check_imgsz(imgsz, batch)


def make_predictor(
    *,
    model: Any,
    weights: str | None,
    device: str,
    conf: float | None,
    iou: float | None,
    max_det: int,
    classes: list[str] | None,
    imgsz: int | None,
    half: bool,
    seed: int,
    on_log: Log | None = None,
    tile: int | None = None,
    tile_overlap: float = 0.2,
    merge: str = "nms",
    batch: int = 1,
) -> Any:
    """Load `model` (a name, or a `LoadedModel` to reuse) and wrap it in a `Predictor`; with
    `tile`, in a `TiledPredictor` over it (tiles `batch` at a time)."""
    import torch

    from visiontool.engine.predict.predictor import Predictor
    from visiontool.models.factory import LoadedModel, load_model
    from visiontool.runtime import resolve_device

    log = on_log or (lambda message: None)
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        device_ = resolve_device(device)
        torch.manual_seed(seed)
        loaded = load_model(model, weights, device=device_)
    class_ids = resolve_classes(classes, loaded.info.classes)
    if loaded.info.weights.startswith("none"):
        log("running with random weights (--weights none): predictions are meaningless")
    if half and loaded.device.type != "cuda":
        log("--half ignored on CPU (autocast is GPU-only here)")
    predictor = Predictor(
        loaded,
        conf=conf,
        iou=iou,
        max_det=max_det,
        classes=class_ids,
        imgsz=imgsz,
        half=half,
    )
    if not tile:
        return predictor
    from visiontool.engine.predict.tiling import TiledPredictor

    return TiledPredictor(predictor, tile=tile, overlap=tile_overlap, merge=merge, batch=batch)


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


def stream_results(
    inputs: Iterable[Any],
    predictor: Any,
    *,
    batch: int = 1,
    workers: int | None = None,
    inflight: int | None = None,
    topk: int = 5,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    keep_images: bool = False,
    vid_stride: int = 1,
    clock: Any = None,
    decode: str = "auto",
) -> Iterator[tuple[ImageResult, Any]]:
    """Yield `(result, image)` per input, in input order; `image` is the decoded uint8
    (3, H, W) tensor when `keep_images` (for drawing) and the result is not a failure, else
    None. A failed image travels alone, uncomputed, and is yielded in its place. `clock`
    (an `inflight.BusyClock`) adds up the time the model was busy. `decode`: where JPEGs
    are decoded: `cpu` (workers), `device` (batched on the model's device,
    `io.device_decode`), `auto` (the device when it is a GPU)."""
    from visiontool.engine.predict.stream import decoded_stream

    workers = default_workers() if workers is None else workers
    pin = getattr(predictor.device, "type", "cpu") == "cuda"
    on_device = decode == "device" or (decode == "auto" and pin)
    items = decoded_stream(inputs, workers=workers, max_pixels=max_pixels, pin_memory=pin,
                           vid_stride=vid_stride,
                           device=predictor.device if on_device else None)  # fmt: skip
    outcomes = map_in_order(
        partial(_predict, predictor, clock or contextlib.nullcontext()),
        _batches(items, batch),
        inflight or DEFAULT_INFLIGHT,
        skip=lambda group: group[0].error is not None,
    )
    info = predictor.loaded.info
    with contextlib.closing(items), contextlib.closing(outcomes):
        for group, outcome in outcomes:
            if outcome is None:
                yield _failed(group[0], info), None
                continue
            predictions, batch_ms = outcome
            for item, prediction in zip(group, predictions, strict=True):
                result = to_result(item, prediction, info, topk=topk, conf=predictor.conf)
                result.speed["inference"] = batch_ms / len(group)
                yield result, item.image if keep_images else None


def _predict(predictor: Any, clock: Any, batch: list[DecodedItem]) -> tuple[list[Any], float]:
    """Runs in a model thread: the batch's predictions and its model time in ms."""
    start = time.perf_counter()
    with clock:
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


def _failed(item: DecodedItem, info: Any) -> ImageResult:
    result = ImageResult(
        image=item.path, rel=item.rel, error=item.error, speed={"decode": item.decode_ms}
    )
    _empty_like_the_task(result, info)
    return result


def _empty_like_the_task(result: ImageResult, info: Any) -> None:
    """A failed image's JSON has the task's own empty list (`classes` for classifiers), so
    every line of one run has the same keys."""
    from visiontool.tasks.spec import get_task

    if get_task(info.task).output == "scores":
        result.classes = []


def to_result(
    item: DecodedItem, prediction: Any, info: Any, *, topk: int, conf: float | None = None
) -> ImageResult:
    """Turn a model prediction into an `ImageResult` with labels: detections, or the classes
    its task reports (`TaskSpec.classes`: the top-k of a classifier, every class scoring >=
    `conf` of a multi-label model)."""
    height, width = int(item.image.shape[1]), int(item.image.shape[2])
    result = ImageResult(
        image=item.path, rel=item.rel, width=width, height=height, speed={"decode": item.decode_ms},
        frame=item.frame, time_s=item.time_s, video=item.video,
    )  # fmt: skip
    if getattr(prediction, "error", None):  # the model failed on this image: report it
        result.error = prediction.error
        _empty_like_the_task(result, info)
        return result
    if prediction.probs is not None:
        from visiontool.tasks.spec import get_task

        report = get_task(info.task).classes
        result.classes = report(prediction.probs, info.classes, topk=topk, conf=conf)
        return result
    boxes = prediction.boxes.tolist()
    result.detections = [
        Detection(tuple(box), float(score), int(cid), info.classes[int(cid)])
        for box, score, cid in zip(
            boxes, prediction.scores.tolist(), prediction.class_ids.tolist(), strict=True
        )
    ]
    return result
