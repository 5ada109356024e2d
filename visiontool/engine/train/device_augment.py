"""Training augmentation on the training device: the workers only decode.

On a GPU machine the CPU workers decoding, flipping, cropping and resizing every image were what
fed the GPU; with `--augment-on device` they decode only, each batch crosses to the GPU as uint8,
and the same `transforms.v2` pipeline runs there on the tensors. Each sample is drawn under its
own seed (`state.sample_seed` of the run's seed, the epoch and the index) in the main process,
as the workers draw it, so the random choices are the same on either side: on a CPU both give
bit-identical batches (tested), and on a GPU only the interpolation kernels' rounding differs.
"""

from __future__ import annotations

from typing import Any

from visiontool.engine.train.state import sample_seed, seeded


class DeviceAugment:
    """`transforms` applied per sample on `device`; `pairs`: they take (image, target), as a
    detection data set's do (a classifier's take the image alone)."""

    def __init__(self, transforms: Any, seed: int, device: Any, *, pairs: bool) -> None:
        self.transforms = transforms
        self.seed = seed
        self.device = device
        self.pairs = pairs

    def __call__(
        self, images: list[Any], targets: list[Any], keys: list[tuple[int, int]]
    ) -> tuple[list[Any], list[Any]]:
        out_images, out_targets = [], []
        for image, target, (epoch, index) in zip(images, targets, keys, strict=True):
            image = image.to(self.device, non_blocking=True)
            target = to_device(target, self.device)
            with seeded(sample_seed(self.seed, epoch, index), self.device):
                if self.pairs:
                    image, target = self.transforms(image, target)
                else:
                    image = self.transforms(image)
            out_images.append(image)
            out_targets.append(target)
        return out_images, out_targets


def to_device(target: Any, device: Any) -> Any:
    """A target (a dict of tensors, a tensor, or a class index) on `device`."""
    if isinstance(target, dict):
        return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v
                for k, v in target.items()}  # fmt: skip
    return target.to(device, non_blocking=True) if hasattr(target, "to") else target
