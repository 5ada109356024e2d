"""Training and evaluation transforms per model family, on torchvision.transforms.v2.

v2 moves `tv_tensors.BoundingBoxes` with the image through flips, crops, zooms and affine
warps, so boxes stay on their objects; `SanitizeBoundingBoxes` runs last and drops boxes that
became empty together with every per-box field of the target (labels, iscrowd, area,
difficult). Every preset returns float32 images in [0, 1]; normalisation belongs to the model.
Evaluation transforms never change geometry, so predictions are scored in original pixels
(detectors resize internally).

Callable as `t(image, target)` for detection and `t(image)` for classification.
"""

from __future__ import annotations

from typing import Any

from visiontool.errors import ConfigError

PRESETS = ("frcnn", "ssd", "classify", "multilabel", "none")
PER_BOX_KEYS = ("labels", "iscrowd", "area", "difficult")
ZOOM_FILL = (124, 116, 104)  # ImageNet mean in 0..255: zoom-out borders look like "nothing"


def build_transforms(preset: str, *, train: bool, imgsz: int | None = None) -> Any:
    """The transform pipeline of `preset` (frcnn, ssd, classify, multilabel, none)."""
    import torch
    from torchvision.transforms import v2

    builders = {"frcnn": _frcnn, "ssd": _ssd, "classify": _classify, "multilabel": _multilabel,
                "none": _none}  # fmt: skip
    if preset not in builders:
        raise ConfigError(f"unknown augmentation preset {preset!r} (known: {', '.join(PRESETS)})")
    steps = builders[preset](train=train, imgsz=imgsz)
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train and preset not in ("classify", "multilabel"):
        steps.append(v2.ClampBoundingBoxes())
        steps.append(Sanitize())
    return v2.Compose(steps)


def _none(*, train: bool, imgsz: int | None) -> list[Any]:
    return []


def _frcnn(*, train: bool, imgsz: int | None) -> list[Any]:
    """Light augmentation (the model rescales images itself): colour, zoom-out, flip, a small
    rotation with scale jitter; with imgsz, random shorter-side resizing around it."""
    from torchvision.transforms import v2

    if not train:
        return []
    steps = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=_fill(), side_range=(1.0, 2.0), p=0.2),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.RandomAffine(degrees=5, scale=(0.9, 1.1), fill=_fill())], p=0.3),
    ]
    if imgsz:
        sizes = [int(imgsz * s) for s in (0.75, 0.875, 1.0, 1.125, 1.25)]
        steps.append(v2.RandomShortestSize(min_size=sizes, max_size=int(imgsz * 1.67)))
    return steps


def _ssd(*, train: bool, imgsz: int | None) -> list[Any]:
    """The SSD recipe: colour distortion, zoom-out, IoU crop, flip, then a fixed square size."""
    from torchvision.transforms import v2

    if not train:
        return []
    steps = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=_fill(), side_range=(1.0, 3.0), p=0.5),
        IoUCropWithBoxes(),
        v2.RandomHorizontalFlip(p=0.5),
    ]
    if imgsz:
        steps.append(v2.Resize((imgsz, imgsz), antialias=True))
    return steps


def _classify(*, train: bool, imgsz: int | None) -> list[Any]:
    """Crop, small rotation and colour; no flips (digits are not mirror-symmetric)."""
    from torchvision.transforms import v2

    if not train:
        return [v2.Resize((imgsz, imgsz), antialias=True)] if imgsz else []
    steps: list[Any] = []
    if imgsz:
        steps.append(
            v2.RandomResizedCrop(
                (imgsz, imgsz), scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True
            )
        )
    steps += [
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05)),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    ]
    return steps


def _multilabel(*, train: bool, imgsz: int | None) -> list[Any]:
    """The whole image, resized to a square (no crop: every labelled object stays in view),
    flipped and colour-jittered."""
    from torchvision.transforms import v2

    steps: list[Any] = [v2.Resize((imgsz, imgsz), antialias=True)] if imgsz else []
    if train:
        steps += [
            v2.RandomHorizontalFlip(p=0.5),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        ]
    return steps


def _fill() -> dict[Any, Any]:
    """Mean-colour borders for images; 0 for masks (which take only one value)."""
    import torch
    from torchvision import tv_tensors

    return {tv_tensors.Image: ZOOM_FILL, torch.Tensor: ZOOM_FILL, "others": 0}


def _per_box_fields(inputs: Any) -> tuple[Any, ...]:
    """Every per-box tensor of the target, so sanitizing keeps them aligned with the boxes."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) > 1 else None
    if not isinstance(target, dict):
        return ()
    return tuple(target[key] for key in PER_BOX_KEYS if key in target)


class Sanitize:
    """`SanitizeBoundingBoxes` over all per-box fields; a no-op for inputs without boxes."""

    def __init__(self, min_size: float = 1.0) -> None:
        from torchvision.transforms import v2

        self.inner = v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=_per_box_fields)

    def __call__(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        target = sample[1] if isinstance(sample, (tuple, list)) and len(sample) > 1 else None
        if not isinstance(target, dict) or "boxes" not in target:
            return sample
        return self.inner(*inputs)

    def __repr__(self) -> str:
        return f"Sanitize({self.inner!r})"


class IoUCropWithBoxes:
    """`RandomIoUCrop`, skipped on images without boxes (where it would never find a crop)."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.inner = v2.RandomIoUCrop()

    def __call__(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        target = sample[1] if isinstance(sample, (tuple, list)) and len(sample) > 1 else None
        if not isinstance(target, dict) or len(target.get("boxes", ())) == 0:
            return sample
        return self.inner(*inputs)

    def __repr__(self) -> str:
        return "IoUCropWithBoxes()"
