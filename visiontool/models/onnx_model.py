"""An exported ONNX model as a model `detect`, `eval` and `predict` can run.

`load_onnx(path)` reads the `ModelInfo` and resize settings `visiontool export` stored in the
file's metadata and wraps an onnxruntime session in `OnnxModule`, a module with the call
signature of the eager model (a list of images -> one {"boxes", "scores", "labels"} dict each
for detectors; a normalised batch -> logits for classifiers), so the `Predictor` runs it
unchanged: the same pre-resize, class mapping, `--conf` and `--max-det`. The NMS IoU and the
candidates' floor (score 0.001) are inside the graph; `--iou` cannot change them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from visiontool.errors import ModelLoadError


class OnnxModule(nn.Module):
    """Runs an onnxruntime session with the eager model's call signature."""

    exported = True  # the predictor pushes no thresholds into it

    def __init__(self, session: Any, *, detector: bool, transform: Any = None) -> None:
        super().__init__()
        self.session = session
        self.detector = detector
        self.input_name = session.get_inputs()[0].name
        self.input_shape = list(session.get_inputs()[0].shape)
        self.half = session.get_inputs()[0].type == "tensor(float16)"  # export --half
        if transform is not None:
            self.transform = transform  # read by the head's pre-resize

    def forward(self, images: Any) -> Any:
        if not self.detector:
            try:
                (logits,) = self.session.run(None, {self.input_name: _numpy(images, self.half)})
            except Exception as exc:  # onnxruntime's own error types
                raise RuntimeError(f"onnxruntime: {exc}") from None
            return torch.from_numpy(logits).float()
        return [self._detect(image) for image in images]

    def _detect(self, image: Any) -> dict[str, Any]:
        """One image; a graph traced at a fixed size gets the image stretched to that size
        (boxes mapped back): export with --dynamic for any shape as the eager model sees it."""
        height, width = int(image.shape[-2]), int(image.shape[-1])
        fixed = self.input_shape[-2:]
        scale = (1.0, 1.0)
        if all(isinstance(v, int) for v in fixed) and tuple(fixed) != (height, width):
            image = torch.nn.functional.interpolate(
                image[None], size=tuple(fixed), mode="bilinear", align_corners=False
            )[0]
            scale = (width / fixed[1], height / fixed[0])
        try:
            boxes, scores, labels = self.session.run(
                None, {self.input_name: _numpy(image, self.half)}
            )
        except Exception as exc:  # onnxruntime's own error types: the image is reported failed
            raise RuntimeError(f"onnxruntime: {exc}") from None
        boxes = torch.from_numpy(boxes).float() * torch.tensor([scale[0], scale[1], scale[0],
                                                                scale[1]])  # fmt: skip
        return {"boxes": boxes, "scores": torch.from_numpy(scores).float(),
                "labels": torch.from_numpy(labels).long()}  # fmt: skip


def _numpy(tensor: Any, half: bool = False) -> Any:
    tensor = tensor.detach().cpu()
    return (tensor.half() if half else tensor.float()).contiguous().numpy()


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime session on the CPU; a clear error naming the extra without it, and a
    one-line model error for a file onnxruntime cannot read."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(
            f"{path} is an ONNX model: running it needs onnxruntime, "
            "`pip install 'visiontool[onnx]'`"
        ) from None
    if not Path(path).is_file():
        raise ModelLoadError(f"ONNX model {path} not found")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail...)
        reason = " ".join(str(exc).split())[:200]
        raise ModelLoadError(
            f"{path} is not an ONNX model onnxruntime can run ({reason})"
        ) from None


def load_onnx(path: str | Path) -> tuple[OnnxModule, Any]:
    """(module, ModelInfo) of a file written by `visiontool export --format onnx`."""
    from visiontool.models.info import ModelInfo

    path = Path(path)
    session = onnx_session(path)
    meta = session.get_modelmeta().custom_metadata_map
    if "visiontool_model_info" not in meta:
        raise ModelLoadError(
            f"{path} is an ONNX model without visiontool's metadata (classes, preprocessing): "
            "export it with `visiontool export`"
        )
    info = ModelInfo.from_dict(json.loads(meta["visiontool_model_info"]))
    transform = None
    if "visiontool_transform" in meta:
        values = json.loads(meta["visiontool_transform"])
        fixed = tuple(values["fixed_size"]) if values.get("fixed_size") else None
        transform = SimpleNamespace(min_size=tuple(values["min_size"]),
                                    max_size=values["max_size"], fixed_size=fixed)  # fmt: skip
    outputs = [o.name for o in session.get_outputs()]
    detector = outputs[:3] == ["boxes", "scores", "labels"]  # what export names them
    module = OnnxModule(session, detector=detector, transform=transform)
    info = ModelInfo.from_dict({**info.to_dict(), "weights": str(path)})
    return module, info
