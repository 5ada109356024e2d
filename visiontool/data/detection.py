"""The one detection Dataset: a list of `ImageRecord`s, decoded lazily.

Every reader (COCO, VOC, YOLO) only parses annotations into records; this class turns a record
into the `(image, target)` pair torchvision detection models train on, so all formats behave
the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from visiontool.data.records import ImageRecord, Issue

try:  # a Dataset subclass when torch is there; readers and `data check` do not need it
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    _TorchDataset = object  # type: ignore[assignment,misc]


class DetectionDataset(_TorchDataset):  # type: ignore[misc]
    """Images with boxes. `image_id`s are unique; `category_ids[k]` is the COCO id of class k."""

    task = "detect"

    def __init__(
        self,
        records: list[ImageRecord],
        classes: list[str],
        *,
        root: Path,
        category_ids: list[int] | None = None,
        transforms: Callable[..., Any] | None = None,
        format: str = "",
        split: str | None = None,
        issues: list[Issue] | None = None,
    ) -> None:
        self._records = records
        self.classes = list(classes)
        self.root = Path(root)
        self.category_ids = list(category_ids or range(1, len(classes) + 1))
        self.transforms = transforms
        self.format = format
        self.split = split
        self.issues = list(issues or [])

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[ImageRecord]:
        """Annotations only, no pixels decoded (for stats, conversion, evaluation)."""
        return self._records

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        record = self._records[index]
        image = read_named(record.path)
        target = make_target(record, (int(image.shape[-2]), int(image.shape[-1])))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        return (
            f"DetectionDataset(format={self.format!r}, split={self.split!r}, "
            f"images={len(self)}, classes={len(self.classes)}, root={str(self.root)!r})"
        )


def read_named(path: Path) -> Any:
    """`io.images.read_image`, its `ImageError` naming the file (a run that stops on it says
    which image to fix)."""
    from visiontool.errors import ImageError
    from visiontool.io.images import read_image

    try:
        return read_image(path)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc


def make_target(record: ImageRecord, canvas: tuple[int, int]) -> dict[str, Any]:
    """The torchvision target dict of a record; `canvas` is the decoded (H, W)."""
    import torch
    from torchvision import tv_tensors

    boxes = torch.as_tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
    height, width = canvas
    if (width, height) != (record.width, record.height) and record.width and record.height:
        # the annotation's size disagrees with the pixels (rare); keep boxes on the objects
        scale = torch.tensor([width / record.width, height / record.height] * 2)
        boxes = boxes * scale
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=canvas),
        "labels": torch.as_tensor(record.labels, dtype=torch.int64),
        "image_id": int(record.image_id),
        "iscrowd": torch.as_tensor(record.iscrowd.astype("int64"), dtype=torch.int64),
        "area": torch.as_tensor(record.box_area(), dtype=torch.float32),
        "difficult": torch.as_tensor(record.difficult, dtype=torch.bool),
    }
