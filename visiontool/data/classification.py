"""The classification Dataset: (path, label) samples from an ImageFolder tree or a CSV."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from visiontool.data.records import Issue

try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover
    _TorchDataset = object  # type: ignore[assignment,misc]


class ClassificationDataset(_TorchDataset):  # type: ignore[misc]
    """Images with one label each, or several (`multi_label`, from a CSV with spaces).

    `samples` holds `(path, label)`; for multi-label sets `label` is the first label and
    `label_sets` holds all of them, and `__getitem__` returns a multi-hot float tensor.
    """

    task = "classify"

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        *,
        root: Path,
        label_sets: list[list[int]] | None = None,
        transforms: Callable[..., Any] | None = None,
        format: str = "",
        split: str | None = None,
        issues: list[Issue] | None = None,
    ) -> None:
        self.samples = samples
        self.classes = list(classes)
        self.root = Path(root)
        self.label_sets = label_sets
        self.multi_label = label_sets is not None
        self.transforms = transforms
        self.format = format
        self.split = split
        self.issues = list(issues or [])

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch

        from visiontool.data.detection import read_named

        path, label = self.samples[index]
        image = read_named(path)
        target: Any = label
        if self.label_sets is not None:
            target = torch.zeros(len(self.classes), dtype=torch.float32)
            target[self.label_sets[index]] = 1.0
        if self.transforms is not None:
            image = self.transforms(image)
        return image, target

    def __repr__(self) -> str:
        return (
            f"ClassificationDataset(format={self.format!r}, split={self.split!r}, "
            f"images={len(self)}, classes={len(self.classes)}, root={str(self.root)!r})"
        )


def as_multilabel(dataset: Any) -> ClassificationDataset:
    """`dataset` as a multi-label classification set, whose `__getitem__` gives a multi-hot
    float target: a multi-label CSV as it is; any other classification set with its one label
    per image as a set of one; a detection set with the set of classes its boxes show (an
    image without boxes has the empty set). No pixels are read."""
    if isinstance(dataset, ClassificationDataset):
        if dataset.multi_label:
            return dataset
        label_sets = [[label] for _, label in dataset.samples]
        samples = list(dataset.samples)
    else:
        label_sets, samples = [], []
        for record in dataset.records():
            present = sorted({int(k) for k in record.labels})
            label_sets.append(present)
            samples.append((record.path, present[0] if present else -1))
    return ClassificationDataset(
        samples,
        dataset.classes,
        root=dataset.root,
        label_sets=label_sets,
        transforms=dataset.transforms,
        format=dataset.format,
        split=dataset.split,
        issues=dataset.issues,
    )
