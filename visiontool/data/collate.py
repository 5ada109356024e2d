"""Batching for detection: images differ in size and box count, so a batch is two lists."""

from __future__ import annotations

from typing import Any


def detection_collate(batch: list[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """[(image, target), ...] -> ([images], [targets]), the form torchvision detectors take;
    samples with a third field (their (epoch, index) key) give a third list."""
    return tuple(list(field) for field in zip(*batch, strict=True)) if batch else ([], [])
