"""Decode input images in DataLoader workers, in input order, one item at a time.

Each worker walks the same `SourcePlan` and decodes every N-th path (N = workers), so the
DataLoader's round-robin fetch yields items in input order with no list of paths in memory.
A file that fails to decode becomes an item with an error, never an exception.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from visiontool.errors import ImageError
from visiontool.io.images import read_image
from visiontool.io.sources import SourcePlan


@dataclass
class DecodedItem:
    index: int
    path: str
    rel: str
    image: Any = None  # uint8 (3, H, W) tensor
    error: str | None = None
    decode_ms: float = 0.0

    def pin_memory(self) -> DecodedItem:
        """Called by the DataLoader's pin-memory thread so host-to-GPU copies can overlap."""
        if self.image is not None:
            self.image = self.image.pin_memory()
        return self


def decode_item(index: int, path: str, rel: str, max_pixels: int | None) -> DecodedItem:
    start = time.perf_counter()
    try:
        image = read_image(path, max_pixels=max_pixels)
        error = None
    except ImageError as exc:
        image, error = None, str(exc)
    return DecodedItem(index, path, rel, image, error, (time.perf_counter() - start) * 1000)


class ImageStream(IterableDataset):
    """Every worker walks the plan and decodes its share (index % workers == worker id)."""

    def __init__(self, plan: SourcePlan, max_pixels: int | None) -> None:
        self.plan = plan
        self.max_pixels = max_pixels

    def __iter__(self) -> Iterator[DecodedItem]:
        info = get_worker_info()
        workers, worker_id = (info.num_workers, info.id) if info else (1, 0)
        for index, item in enumerate(self.plan):
            if index % workers == worker_id:
                yield decode_item(index, item.path, item.rel, self.max_pixels)


def _threaded(plan: SourcePlan, max_pixels: int | None, depth: int = 4) -> Iterator[DecodedItem]:
    """Decode in one background thread of this process (the decoders release the GIL), a few
    images ahead: overlap without worker processes, which on 2 cores cost more than they give."""
    import queue
    import threading

    items: queue.Queue[DecodedItem | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for index, item in enumerate(plan):
                if stop.is_set():
                    return
                items.put(decode_item(index, item.path, item.rel, max_pixels))
        finally:
            items.put(None)

    thread = threading.Thread(target=produce, name="visiontool-decode", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not None:
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
    plan: SourcePlan, *, workers: int, max_pixels: int | None, pin_memory: bool = False
) -> Iterator[DecodedItem]:
    """Yield decoded items in input order, decoding in `workers` background processes."""
    if workers <= 0:
        yield from _threaded(plan, max_pixels)
        return
    loader = DataLoader(
        ImageStream(plan, max_pixels),
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=4,
        persistent_workers=False,
    )
    yield from loader
