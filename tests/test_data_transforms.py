"""Augmentation keeps boxes on their objects; sanitizing keeps per-box fields aligned;
detection_collate batches variable numbers of boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from visiontool.data.collate import detection_collate
from visiontool.data.datasets import open_dataset
from visiontool.data.synth import synth_detection
from visiontool.data.transforms import build_transforms
from visiontool.errors import ConfigError


def filled_box_sample(box: list[int]) -> tuple[torch.Tensor, dict]:
    """A white box on black, plus the same box as a Mask: v2 moves masks with the geometry but
    leaves them out of colour jitter, so the mask shows where the object's pixels went."""
    image = torch.zeros(3, 120, 160, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    mask = torch.zeros(1, 120, 160, dtype=torch.uint8)
    mask[:, y1:y2, x1:x2] = 255
    target = {
        "boxes": tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=(120, 160)),
        "labels": torch.tensor([3]),
        "iscrowd": torch.tensor([0]),
        "area": torch.tensor([float((x2 - x1) * (y2 - y1))]),
        "difficult": torch.tensor([False]),
        "image_id": 1,
        "mask": tv_tensors.Mask(mask),
    }
    return image, target


@pytest.mark.parametrize("preset", ["frcnn", "ssd", "none"])
def test_augmented_box_covers_the_filled_pixels(preset: str) -> None:
    transform = build_transforms(preset, train=True, imgsz=128)
    kept = 0
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = transform(*filled_box_sample([50, 30, 110, 90]))
        assert image.dtype == torch.float32
        assert image.shape[-2:] == target["mask"].shape[-2:]
        filled = target["mask"][0] == 255
        if len(target["boxes"]) == 0:
            continue  # cropped away: SanitizeBoundingBoxes dropped it
        kept += 1
        assert target["labels"].tolist() == [3]
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        ys, xs = torch.nonzero(filled, as_tuple=True)
        assert len(xs) > 0
        tol = 2.5  # nearest-neighbour resampling of the mask, after up to 1.25x scaling
        assert xs.min() >= x1 - tol and xs.max() + 1 <= x2 + tol, (seed, preset)
        assert ys.min() >= y1 - tol and ys.max() + 1 <= y2 + tol, (seed, preset)
        # and the box is not much larger than the object (a small rotation enlarges it)
        assert filled.sum() >= 0.6 * (x2 - x1) * (y2 - y1), (seed, preset)
        if preset == "none":  # no augmentation: pixels unchanged, box unchanged
            assert [x1, y1, x2, y2] == [50, 30, 110, 90]
            assert torch.equal(image[:, 30:90, 50:110], torch.ones(3, 60, 60))
    assert kept >= 6


def test_sanitize_drops_every_per_box_field_together() -> None:
    image = torch.zeros(3, 50, 50, dtype=torch.uint8)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            [[0, 0, 10, 10], [20, 20, 20, 30], [5, 5, 40, 40]], format="XYXY", canvas_size=(50, 50)
        ),
        "labels": torch.tensor([0, 1, 2]),
        "iscrowd": torch.tensor([0, 1, 0]),
        "area": torch.tensor([100.0, 0.0, 1225.0]),
        "difficult": torch.tensor([False, True, False]),
        "image_id": 4,
    }
    _, out = build_transforms("none", train=True, imgsz=None)(image, target)
    assert out["labels"].tolist() == [0, 2]
    assert out["iscrowd"].tolist() == [0, 0]
    assert out["area"].tolist() == [100.0, 1225.0]
    assert out["difficult"].tolist() == [False, False]
    assert out["image_id"] == 4


def test_classify_preset_and_unknown_preset() -> None:
    image = torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8)
    out = build_transforms("classify", train=True, imgsz=32)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert build_transforms("classify", train=False, imgsz=32)(image).shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        build_transforms("yolo", train=True, imgsz=None)


def test_ssd_preset_handles_images_without_boxes() -> None:
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(40, 40)),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    out_image, out = build_transforms("ssd", train=True, imgsz=32)(image, target)
    assert out_image.shape == (3, 32, 32) and len(out["boxes"]) == 0


def test_detection_collate_variable_box_counts(tmp_path: Path) -> None:
    synth_detection(tmp_path, n=6, imgsz=48, fmt="yolo", seed=5, val_fraction=0)
    dataset = open_dataset(tmp_path, split="train")
    dataset.transforms = build_transforms("frcnn", train=True, imgsz=None)
    counts = [len(r.boxes) for r in dataset.records()]
    assert len(set(counts)) > 1  # the fixture really has different box counts
    loader = DataLoader(dataset, batch_size=3, collate_fn=detection_collate, shuffle=False)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 3
    assert all(image.dtype == torch.float32 for image in images)
    assert [len(t["boxes"]) for t in targets] == [len(t["labels"]) for t in targets]
    assert detection_collate([]) == ([], [])
