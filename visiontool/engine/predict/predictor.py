"""Batched inference for any registry model: uint8 images in, boxes or class scores out.

The predictor owns the model-side stages only (preprocess -> inference -> postprocess) and
never reads or writes files; `engine.detect` streams inputs through it and hands results to
writers. Images stay uint8 until they reach the model's device, where they become float. The
model's task (`visiontool.tasks`) says which interface it has (`TaskSpec.output`: boxes or
scores), how logits become scores, and the score threshold when none is given.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from visiontool.errors import ConfigError
from visiontool.models.factory import LoadedModel
from visiontool.models.specs import InferenceSettings
from visiontool.runtime import autocast, autocast_dtype
from visiontool.tasks.spec import get_task


@dataclass
class ImagePrediction:
    """Model output for one image, on the CPU, in original-image pixels and 0-based class ids."""

    boxes: Any = None  # (N, 4) float xyxy
    scores: Any = None  # (N,)
    class_ids: Any = None  # (N,) int64
    probs: Any = None  # (C,) for classifiers
    error: str | None = None  # the model failed on this image (its outputs are then empty)


class Predictor:
    """Runs a loaded model on batches of uint8 (3, H, W) tensors. `conf` None: the model's own
    threshold (`ModelInfo.conf`), else its task's default (`TaskSpec.default_conf`)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        classes: list[int] | None = None,
        imgsz: int | None = None,
        half: bool = False,
        optimize: bool = True,
    ) -> None:
        import torch

        if optimize:
            optimize_for_inference(loaded.module)
        self.loaded = loaded
        self.task = loaded.info.task
        if conf is None:
            conf = loaded.info.conf if loaded.info.conf is not None else self.spec.default_conf
        self.conf = conf
        self.max_det = max_det
        self.keep_classes = sorted(set(classes)) if classes else None
        self.device = loaded.device
        self.autocast_dtype = autocast_dtype(self.device) if half else None
        self._raw_to_class = torch.tensor(loaded.info.raw_to_class(), dtype=torch.int64)
        self.head = loaded.head
        if self.spec.output == "boxes":
            self._configure_boxes(conf, iou, max_det if not classes else None, imgsz)
        self._preprocess = dict(loaded.info.preprocess)
        if self.spec.output == "scores" and imgsz:
            ratio = self._preprocess.get("resize", imgsz) / self._preprocess.get("crop", imgsz)
            self._preprocess.update(crop=imgsz, resize=int(round(imgsz * ratio)))

    @property
    def spec(self) -> Any:
        """The `TaskSpec` of the model's task."""
        return get_task(self.task)

    def _configure_boxes(
        self, conf: float | None, iou: float | None, max_det: int | None, imgsz: int | None
    ) -> None:
        """A detector's head takes the thresholds and input size inside; a model without a
        head (the single-object model: one box per image, no NMS) only its input size."""
        module = self.loaded.module
        if getattr(module, "exported", False):  # an ONNX graph: its NMS and size are fixed
            if iou is not None or imgsz:
                raise ConfigError("--iou and --imgsz are fixed inside an exported model; "
                                  "export again with the values you want")  # fmt: skip
            return
        if self.head is not None:
            self.head.configure(module, InferenceSettings(conf=conf or 0.0, iou=iou,
                                                          max_det=max_det))  # fmt: skip
            if imgsz:
                self.head.set_input_size(module, imgsz)
        elif hasattr(module, "set_input_size"):
            if imgsz:
                module.set_input_size(imgsz)
        else:
            raise ConfigError(f"model {self.loaded.info.name!r} records no detection head")

    def predict(self, images: list[Any]) -> list[ImagePrediction]:
        """Predict a batch. All images should have one shape for batch-size invariance.

        Keeps no per-call state, so several threads may predict at once (`map_in_order`)."""
        import torch

        with torch.inference_mode(), autocast(self.device, self.autocast_dtype), self._stream():
            inputs = [self._to_device(image) for image in images]
            run = self._classify if self.spec.output == "scores" else self._detect
            try:
                return run(inputs)
            except (RuntimeError, ValueError, IndexError) as exc:  # an odd image, or OOM
                if len(inputs) == 1:
                    return [self._failed(exc)]
            return [self._one(run, image) for image in inputs]  # find the image at fault

    def _stream(self) -> Any:
        """On CUDA, this thread's own stream, so the batches of several model threads overlap
        (copies of one with kernels of another) instead of queuing on the one default stream.
        It first waits for the default stream, where images decoded on the GPU were made;
        outputs reach the CPU inside it (`.cpu()` waits for its work), so nothing leaves
        half-computed. Elsewhere a no-op."""
        import contextlib

        import torch

        if self.device.type != "cuda":
            return contextlib.nullcontext()
        local = self.__dict__.setdefault("_streams", threading.local())
        stream = getattr(local, "stream", None)
        if stream is None:
            stream = local.stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.default_stream(self.device))
        return torch.cuda.stream(stream)

    def _one(self, run: Any, image: Any) -> ImagePrediction:
        try:
            return run([image])[0]
        except (RuntimeError, ValueError, IndexError) as exc:
            return self._failed(exc)

    def _failed(self, exc: BaseException) -> ImagePrediction:
        """An empty prediction that says why the model failed on the image: the run reports
        the image and goes on (a bad item never stops a run)."""
        import torch

        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in reason:
            reason = "out of memory on this image; use a smaller --imgsz or --max-pixels"
        empty = torch.zeros(0, dtype=torch.float32)
        return ImagePrediction(
            boxes=empty.reshape(0, 4),
            scores=empty,
            class_ids=torch.zeros(0, dtype=torch.int64),
            probs=None if self.spec.output == "boxes" else empty,
            error=f"model failed on this image ({reason})",
        )

    def _detect(self, inputs: list[Any]) -> list[ImagePrediction]:
        resized = [self._resize_first(image) for image in inputs]
        outputs = self.loaded.module([image for image, _ in resized])
        return [
            self._detections(output, scale)
            for output, (_, scale) in zip(outputs, resized, strict=True)
        ]

    def _resize_first(self, image: Any) -> tuple[Any, tuple[float, float]]:
        """The head's resize-before-normalise shortcut (same input, fewer pixels to
        normalise; see `models.heads.torchvision_parts.preresize`); a model without a head
        resizes inside."""
        if self.head is None:
            return image, (1.0, 1.0)
        return self.head.preresize(self.loaded.module, image)

    def _to_device(self, image: Any) -> Any:
        """uint8 [0, 255] (what decoders give) or float [0, 1] (already converted)."""
        import torch

        if image.is_cuda:  # decoded on the GPU, on another stream
            image.record_stream(torch.cuda.current_stream(self.device))
        image = image.to(self.device, non_blocking=True)
        if image.dtype == torch.uint8:
            return image.float().div_(255.0)
        return image.float()

    def _detections(self, output: dict[str, Any], scale: tuple[float, float]) -> ImagePrediction:
        import torch

        boxes = output["boxes"].float().cpu()
        if scale != (1.0, 1.0):
            boxes = boxes * torch.tensor([scale[0], scale[1], scale[0], scale[1]])
        scores = output["scores"].float().cpu()
        raw = output["labels"].cpu().clamp(0, len(self._raw_to_class) - 1)
        class_ids = self._raw_to_class[raw]
        keep = (class_ids >= 0) & (scores >= (self.conf or 0.0))
        if self.keep_classes is not None:
            allowed = self._class_mask()
            keep &= allowed[class_ids.clamp(min=0)]
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        order = scores.argsort(descending=True, stable=True)
        if self.max_det is not None:
            order = order[: self.max_det]
        return ImagePrediction(boxes=boxes[order], scores=scores[order], class_ids=class_ids[order])

    def _class_mask(self) -> Any:
        import torch

        mask = torch.zeros(len(self.loaded.info.classes), dtype=torch.bool)
        mask[torch.tensor(self.keep_classes, dtype=torch.int64)] = True
        return mask

    def _classify(self, inputs: list[Any]) -> list[ImagePrediction]:
        import torch

        batch = torch.stack([classify_transform(x, self._preprocess) for x in inputs])
        logits = self.loaded.module(batch)
        if isinstance(logits, tuple):  # GoogLeNet/Inception aux outputs
            logits = logits[0]
        probs = self.spec.activation(logits).cpu()  # softmax, or a sigmoid per class
        return [ImagePrediction(probs=p) for p in probs]


def optimize_for_inference(module: Any) -> None:
    """Rearrange a model that will not be trained again for faster inference, same function:
    batch norms folded into their convolutions (~5% of model time, equal to float rounding)
    and channels-last memory, the layout oneDNN/cuDNN convolutions prefer (bit-identical,
    ~20% less model time: frcnn-mobile-320 on 1080p, CPU)."""
    import torch

    from visiontool.models.fusion import fuse_conv_bn

    module.eval()
    fuse_conv_bn(module)
    module.to(memory_format=torch.channels_last)


def classify_transform(image: Any, preprocess: dict[str, Any]) -> Any:
    """Resize the short side, centre-crop and normalise a float (3, H, W) image in [0, 1];
    with `square` (multi-label models: nothing may be cut off) the whole image is resized to
    the crop size instead."""
    from torchvision.transforms.v2 import functional as F

    resize = preprocess.get("resize")
    crop = preprocess.get("crop")
    if preprocess.get("square") and crop:
        image = F.resize(_trim_long_side(image, MAX_CLASSIFY_ASPECT), [int(crop), int(crop)],
                         antialias=True)  # fmt: skip
        return normalize_for_model(image, preprocess)
    if resize:
        image = F.resize(_trim_long_side(image, MAX_CLASSIFY_ASPECT), [int(resize)], antialias=True)
    if crop:
        image = F.center_crop(image, [int(crop), int(crop)])
    return normalize_for_model(image, preprocess)


MAX_CLASSIFY_ASPECT = 4.0


def _trim_long_side(image: Any, max_aspect: float) -> Any:
    """Centre-crop the long side of a (C, H, W) image to `max_aspect` times the short side.

    The classifier crops a square from the centre after resizing the short side, so for
    ordinary images this is a no-op; a 2x40000 strip would otherwise be resized to
    224x4,480,000 (12 GB) only to keep its centre."""
    height, width = image.shape[-2:]
    short = min(height, width)
    longest = max(1, int(short * max_aspect))
    if height > longest:
        top = (height - longest) // 2
        image = image[..., top : top + longest, :]
    if width > longest:
        left = (width - longest) // 2
        image = image[..., :, left : left + longest]
    return image


def normalize_for_model(image: Any, preprocess: dict[str, Any]) -> Any:
    """Grayscale (if the model wants one channel) and mean/std normalisation, (C, H, W) or
    (N, C, H, W). Training applies this after augmentation; inference after resize/crop."""
    import torch
    from torchvision.transforms.v2 import functional as F

    if preprocess.get("grayscale"):
        image = F.rgb_to_grayscale(image)
    channels = image.shape[-3]
    mean = torch.tensor(preprocess.get("mean", [0.0] * channels), device=image.device)
    std = torch.tensor(preprocess.get("std", [1.0] * channels), device=image.device)
    return (image - mean[:, None, None]) / std[:, None, None]
