"""Decode inputs in input order, one item at a time: the first stage of every prediction.

Two kinds of input. A `SourcePlan` (files, folders, globs, lists) can be walked many times, so
with `workers > 0` each DataLoader worker walks it and decodes every N-th path (N = workers),
and the DataLoader's round-robin fetch yields items in input order with no list of paths in
memory. Any other iterable (a generator of paths, decoded images from a camera) is walked once,
in a background thread, a few items ahead of the model. Either way a file that fails to decode
becomes an item with an error, never an exception.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from visiontool.errors import ImageError
from visiontool.io.images import read_image, to_rgb
from visiontool.io.sources import SourceItem, SourcePlan


@dataclass
class DecodedItem:
    index: int
    path: str
    rel: str
    image: Any = None  # uint8 (3, H, W) tensor
    error: str | None = None
    decode_ms: float = 0.0
    frame: int | None = None  # a video's frame number (from 0), None for an image
    time_s: float | None = None  # the frame's time in its video (since the start, live)
    video: Any = None  # the frame's `io.video.VideoInfo`
    encoded: Any = None  # an `io.device_decode.EncodedJpeg` still to decode on the device

    def pin_memory(self) -> DecodedItem:
        """Called by the DataLoader's pin-memory thread so host-to-GPU copies can overlap."""
        if self.image is not None:
            self.image = self.image.pin_memory()
        return self


def decode_item(
    index: int, path: str, rel: str, max_pixels: int | None, for_device: bool = False
) -> DecodedItem:
    """Decode `path`; `for_device`: a plain JPEG is only read, for `finish_on_device`."""
    start = time.perf_counter()
    encoded = None
    try:
        if for_device:
            from visiontool.io.device_decode import read_for_device

            encoded = read_for_device(path, max_pixels)
        image = read_image(path, max_pixels=max_pixels) if encoded is None else None
        error = None
    except ImageError as exc:
        image, error = None, str(exc)
    item = DecodedItem(index, path, rel, image, error, (time.perf_counter() - start) * 1000)
    item.encoded = encoded
    return item


def finish_on_device(
    items: Iterator[DecodedItem], device: Any, max_pixels: int | None, group: int = 8
) -> Iterator[DecodedItem]:
    """Decode the read-only JPEGs among `items` on `device`, up to `group` in one call, in
    order. A group the device decoder refuses is decoded one by one, and a file it refuses
    alone on the CPU (which names what is wrong with it)."""
    pending: list[DecodedItem] = []

    def flush() -> Iterator[DecodedItem]:
        from visiontool.io.device_decode import decode_on_device

        start = time.perf_counter()
        try:
            images = decode_on_device([item.encoded for item in pending], device)
        except RuntimeError:
            images = [None] * len(pending)
        share = (time.perf_counter() - start) * 1000 / max(1, len(pending))
        for item, image in zip(pending, images, strict=True):
            if image is None:
                item = _decode_alone(item, device, max_pixels)
            else:
                item.image, item.encoded = image, None
                item.decode_ms += share
            yield item
        pending.clear()

    for item in items:
        if item.encoded is not None:
            pending.append(item)
            if len(pending) >= group:
                yield from flush()
            continue
        if pending:
            yield from flush()
        yield item
    if pending:
        yield from flush()


def _decode_alone(item: DecodedItem, device: Any, max_pixels: int | None) -> DecodedItem:
    from visiontool.io.device_decode import decode_on_device

    start = time.perf_counter()
    try:
        (image,) = decode_on_device([item.encoded], device)
    except RuntimeError:
        return decode_item(item.index, item.path, item.rel, max_pixels)  # the CPU says why
    item.image, item.encoded = image, None
    item.decode_ms += (time.perf_counter() - start) * 1000
    return item


def decode_input(
    index: int, entry: Any, max_pixels: int | None, for_device: bool = False
) -> DecodedItem:
    """Decode one entry of a one-pass input: a `SourceItem`, a file path, or an image already
    in memory (named `<image N>` in results)."""
    if isinstance(entry, SourceItem):
        return decode_item(index, entry.path, entry.rel, max_pixels, for_device)
    if isinstance(entry, (str, Path)):
        return decode_item(index, str(entry), Path(entry).name, max_pixels)
    start = time.perf_counter()
    name = f"<image {index}>"
    try:
        image, error = as_image_tensor(entry), None
    except ImageError as exc:
        image, error = None, str(exc)
    return DecodedItem(index, name, name, image, error, (time.perf_counter() - start) * 1000)


def as_image_tensor(data: Any) -> Any:
    """An in-memory RGB image as the uint8 (3, H, W) tensor decoders give: a PIL image (any
    mode), a uint8 numpy array (H, W, 3) or (H, W), or a uint8 torch tensor (3, H, W).

    Arrays become a (3, H, W) view of their (H, W, 3) memory, with no copy when they are
    contiguous, the layout `read_image` returns."""
    import numpy as np
    import torch

    if hasattr(data, "mode") and hasattr(data, "size") and hasattr(data, "convert"):  # PIL
        data = np.asarray(to_rgb(data), dtype=np.uint8)
    if isinstance(data, np.ndarray):
        if (
            data.dtype != np.uint8
            or data.ndim not in (2, 3)
            or data.ndim == 3
            and data.shape[2] != 3
        ):
            raise ImageError(
                f"expected a uint8 RGB array of shape (H, W, 3) or (H, W), "
                f"got {data.dtype} {tuple(data.shape)}"
            )
        if data.ndim == 2:
            data = np.repeat(data[:, :, None], 3, axis=2)
        if not data.flags.writeable:
            data = data.copy()
        data = torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1)
    if not isinstance(data, torch.Tensor):
        raise ImageError(
            f"not an image: {type(data).__name__} (pass a path, a PIL image, "
            "a numpy (H, W, 3) uint8 array or a torch (3, H, W) uint8 tensor)"
        )
    if data.dtype != torch.uint8 or data.ndim != 3 or data.shape[0] != 3:
        raise ImageError(
            f"expected a uint8 tensor of shape (3, H, W), got {data.dtype} {tuple(data.shape)}"
        )
    if data.shape[1] == 0 or data.shape[2] == 0:
        raise ImageError(f"image has no pixels ({data.shape[2]}x{data.shape[1]})")
    return data


def decode_entries(
    inputs: Iterable[Any], max_pixels: int | None, vid_stride: int = 1, for_device: bool = False
) -> Iterator[DecodedItem]:
    """Decode a one-pass input in order: one item per image, one per processed frame of a
    video source (`SourceItem.is_video`)."""
    index = 0
    for entry in inputs:
        if isinstance(entry, SourceItem) and entry.is_video:
            for item in video_items(index, entry, vid_stride, max_pixels):
                yield item
                index += 1
        else:
            yield decode_input(index, entry, max_pixels, for_device)
            index += 1


def video_items(
    index: int, entry: SourceItem, vid_stride: int, max_pixels: int | None
) -> Iterator[DecodedItem]:
    """Every `vid_stride`-th frame of a video source as items numbered from `index`; the
    source's failure (does not open, truncated, a stream that stays down) as an error item."""
    from visiontool.io.video import Frame, read_frames

    start = time.perf_counter()
    for got in read_frames(entry.path, stride=vid_stride):
        elapsed = (time.perf_counter() - start) * 1000
        if not isinstance(got, Frame):
            yield DecodedItem(index, entry.path, entry.rel, error=got.message, decode_ms=elapsed)
            return
        height, width = got.image.shape[:2]
        if max_pixels is not None and height * width > max_pixels:
            message = (f"video frames of {width}x{height} exceed the {max_pixels:,}-pixel "
                       "limit (--max-pixels)")  # fmt: skip
            yield DecodedItem(index, entry.path, entry.rel, error=message, decode_ms=elapsed)
            return
        yield DecodedItem(index, entry.path, entry.rel, as_image_tensor(got.image), None,
                          elapsed, got.number, got.time_s, got.info)  # fmt: skip
        index += 1
        start = time.perf_counter()


class ImageStream(IterableDataset):
    """Every worker walks the plan and decodes its share (index % workers == worker id)."""

    def __init__(self, plan: SourcePlan, max_pixels: int | None, for_device: bool = False):
        self.plan = plan
        self.max_pixels = max_pixels
        self.for_device = for_device

    def __iter__(self) -> Iterator[DecodedItem]:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info else (1, 0)
        for index, item in enumerate(self.plan):
            if index % workers == worker_id:
                yield decode_item(index, item.path, item.rel, self.max_pixels, self.for_device)


@dataclass
class _Raised:
    """An exception from the decode thread (a failing input iterator), re-raised by the
    consumer."""

    error: BaseException


def _threaded(
    inputs: Iterable[Any],
    max_pixels: int | None,
    depth: int = 4,
    vid_stride: int = 1,
    for_device: bool = False,
) -> Iterator[DecodedItem]:
    """Decode in one background thread of this process (the decoders release the GIL), a few
    images ahead: overlap without worker processes, which on 2 cores cost more than they give.
    Closing the generator stops the thread before it returns."""
    items: queue.Queue[DecodedItem | _Raised | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in decode_entries(inputs, max_pixels, vid_stride, for_device):
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as exc:  # the caller's iterator failed: tell the consumer
            items.put(_Raised(exc))
        finally:
            items.put(None)

    thread = threading.Thread(target=produce, name="visiontool-decode", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not None:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)


def _identity(item: Any) -> Any:
    return item


def decoded_stream(
    inputs: SourcePlan | Iterable[Any],
    *,
    workers: int,
    max_pixels: int | None,
    pin_memory: bool = False,
    vid_stride: int = 1,
    device: Any = None,
) -> Iterator[DecodedItem]:
    """Yield decoded items in input order: a plan of images in `workers` background processes
    (0: one thread), a plan with videos and any other iterable once, in one thread. With
    `device`, plain JPEGs are only read there and decoded on `device` (`finish_on_device`)."""
    if device is not None:
        read = _decoded(inputs, workers, max_pixels, pin_memory, vid_stride, for_device=True)
        yield from finish_on_device(read, device, max_pixels)
    else:
        yield from _decoded(inputs, workers, max_pixels, pin_memory, vid_stride)


def _decoded(
    inputs: SourcePlan | Iterable[Any],
    workers: int,
    max_pixels: int | None,
    pin_memory: bool,
    vid_stride: int,
    for_device: bool = False,
) -> Iterator[DecodedItem]:
    if workers <= 0 or not isinstance(inputs, SourcePlan) or any(item.is_video for item in inputs):
        yield from _threaded(inputs, max_pixels, vid_stride=vid_stride, for_device=for_device)
        return
    loader = DataLoader(
        ImageStream(inputs, max_pixels, for_device),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4,
        persistent_workers=False,
    )
    iterator = iter(loader)
    try:
        yield from iterator
    finally:  # closed early: stop the worker processes now, not when garbage is collected
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
