"""Batching for detection: images differ in size and box count, so a batch is two lists."""

from __future__ import annotations

from typing import Any


def detection_collate(batch: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """[(image, target), ...] -> ([images], [targets]), the form torchvision detectors take."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
