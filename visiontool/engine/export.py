"""`visiontool export`: a model as ONNX or TorchScript, checked against the eager model.

What is exported is the model step of `detect` for one image, so a runtime needs nothing of
visiontool's model code:

- detectors: a float (3, H, W) image in [0, 1], already resized the way `detect` resizes it
  (the head's pre-resize: `Predictor._resize_first`), in; `boxes` (N, 4) xyxy in that image's
  pixels, `scores` (N,) and raw `labels` (N,) out. The score threshold inside is 0.001 (all
  candidates up to the model's detections per image), so `--conf` still applies afterwards;
  the NMS IoU is the model's.
- classifiers: a normalised (N, 3, S, S) batch in, logits out.

`--imgsz` fixes the input size the graph is traced at (default: the model's); `--dynamic`
lets height and width (and a classifier's batch) vary. `--half` exports fp16 weights and
inputs (for GPUs; it runs on CPU too, slowly).

The model's `ModelInfo` (classes, preprocessing, input size) and its resize settings travel
inside the file (ONNX metadata, TorchScript extra files), so `detect --weights model.onnx`
rebuilds the same pipeline around it (`visiontool.models.onnx_model`, onnxruntime: the
`visiontool[onnx]` extra). After export, both models run on sample images (synthetic shapes
scenes, made here) and must agree: boxes within 1 px, the same classes, scores within 1e-3.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError
from visiontool.io.paths import resolve_path

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}
EXPORT_SCORE_THRESH = 0.001
OPSET = 17
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE = 1e-3
LOGIT_TOLERANCE = 1e-3
LOGIT_TOLERANCE_HALF = 1e-2


@dataclass
class ExportConfig:
    """Everything `visiontool export` takes."""

    model: str | None = None
    weights: str | None = "DEFAULT"
    format: str = "onnx"
    dynamic: bool = False
    half: bool = False
    imgsz: int | None = None
    out: Path | None = None
    device: str = "cpu"
    exist_ok: bool = False


@dataclass
class ExportReport:
    path: str
    format: str
    input_shape: list[int]
    check: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "input_shape": self.input_shape,
                "check": self.check}  # fmt: skip


def run_export(config: ExportConfig) -> ExportReport:
    """Export, then check the exported model against the eager one (module docstring)."""
    import torch

    from visiontool.engine.predict.pipeline import make_predictor

    if config.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {config.format!r}")
    from visiontool.runtime import check_imgsz

    check_imgsz(config.imgsz)  # the traced sample, as `detect` reckons it: before the model load
    if config.out:  # a bad --out is refused before the (slow) model load
        _check_out(Path(config.out), config)
    predictor = make_predictor(
        model=config.model, weights=config.weights, device=config.device,
        conf=EXPORT_SCORE_THRESH, iou=None, max_det=300, classes=None, imgsz=config.imgsz,
        half=False, seed=0,
    )  # fmt: skip
    info = predictor.loaded.info
    out = Path(config.out) if config.out else Path(f"{info.name}{SUFFIX[config.format]}")
    _check_out(out, config)
    wrapper, samples = _wrapper_and_samples(predictor, config)
    dtype = torch.float16 if config.half else torch.float32
    wrapper = wrapper.to(dtype)
    samples = [s.to(predictor.device, dtype) for s in samples]
    metadata = _metadata(predictor)
    tmp = out.with_name(f".{out.name}.part")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # the exporters warn about every Python int taken from a shape (the traced input size
        # is fixed unless --dynamic) and about their own deprecations: noise for a user; the
        # check below is what says whether the export is right
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if config.format == "onnx":
                _to_onnx(wrapper, samples[0], tmp, predictor, config.dynamic, metadata)
            else:
                _to_torchscript(wrapper, samples[0], tmp, metadata)
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore")
            check = compare(wrapper, tmp, config.format, samples,
                            detector=_is_detector(predictor), half=config.half)  # fmt: skip
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(str(out), config.format, list(samples[0].shape), check)


def _is_detector(predictor: Any) -> bool:
    return predictor.spec.output == "boxes"


def _check_out(out: Path, config: ExportConfig) -> None:
    """Refuse an --out that is a folder, the weights file the model is loaded from (--weights
    PATH, or the shipped or cached file of --model), a path inside the installed package or
    the weights folders (shipped models, torch's download cache), or an existing file (without
    --exist-ok). --exist-ok never makes any of the first ones writable."""
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the file to write")
    if out.exists() and not out.is_symlink() and not out.is_file():
        raise ConfigError(
            f"--out {out} exists and is not a regular file (a device or a pipe); it is never "
            "replaced: name a file"
        )
    for source in model_sources(config):
        if _same_file(out, source):
            raise ConfigError(
                f"--out {out} is the weights file the model is loaded from ({source}); "
                "choose another name"
            )
    target = resolve_path(out)
    for folder, what in protected_folders():
        if target == folder or folder in target.parents:
            raise ConfigError(
                f"--out {out} lies inside {what} ({folder}); nothing is written there: "
                "choose a path outside it"
            )
    if (out.exists() or out.is_symlink()) and not config.exist_ok:
        raise ConfigError(f"--out {out} exists; pass --exist-ok to replace it")


def model_sources(config: ExportConfig) -> list[Path]:
    """The files the model of `config` is loaded from, as far as they can be told before
    loading it: --weights PATH, else --model's shipped checkpoint (its torchvision download
    lies in the cache `protected_folders` names)."""
    from visiontool.io.weights import weights_kind

    if weights_kind(config.weights) == "path":
        return [Path(str(config.weights))]
    if config.model is None or weights_kind(config.weights) != "default":
        return []
    from visiontool import registry

    try:
        spec = registry.get("model", config.model)
    except Exception:  # noqa: BLE001 - an unknown name is reported by the model load
        return []
    if spec.source == "shipped":
        from visiontool.models.shipped import weights_dir

        return [weights_dir() / Path(spec.weights).name]
    return []


def protected_folders() -> list[tuple[Path, str]]:
    """(folder, what it is) that export never writes into: the installed visiontool package
    (its shipped weights among it), the shipped-weights folder in use, torch's weights cache."""
    import visiontool
    from visiontool.io.weights import cache_dir
    from visiontool.models.shipped import weights_dir

    return [
        (resolve_path(Path(visiontool.__file__).parent), "the installed visiontool package"),
        (resolve_path(weights_dir()), "the shipped-weights folder"),
        (resolve_path(cache_dir()), "torch's downloaded-weights cache"),
    ]


def _same_file(out: Path, source: Path) -> bool:
    """`out` is `source`: the same path once links are resolved, or the same file (a hard
    link)."""
    import os

    if resolve_path(out) == resolve_path(source):
        return True
    try:
        return os.path.samefile(out, source)
    except OSError:
        return False


def detector_step(module: Any) -> Any:
    """An nn.Module running the detector on one pre-resized float image -> (boxes, scores, raw
    labels): the tensors-only signature ONNX and TorchScript need (the detector itself takes a
    list and returns dicts). Built here so that importing this module does not import torch."""
    import torch

    class DetectorStep(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, image: Any) -> Any:
            out = self.inner([image])[0]
            return out["boxes"], out["scores"], out["labels"]

    return DetectorStep(module)


def _wrapper_and_samples(predictor: Any, config: ExportConfig) -> tuple[Any, list[Any]]:
    """The module to export and the sample inputs it is traced and checked on."""
    import torch

    from visiontool.engine.predict.predictor import classify_transform

    images = sample_images()
    if _is_detector(predictor):
        if predictor.task == "single":
            raise ConfigError("the single-object model is not exportable yet (its resize is "
                              "inside its forward); export a detector or a classifier")  # fmt: skip
        module = predictor.loaded.module.eval()
        if config.dynamic:  # and a wide one, which a --dynamic graph must take as it is
            images.append(images[-1][:, :200, :])
        samples = [predictor._resize_first(image)[0] for image in images]
        return detector_step(module).eval(), samples
    batch = [classify_transform(image, predictor._preprocess) for image in images]
    return predictor.loaded.module.eval(), [torch.stack(batch[:1]), torch.stack(batch)]


def sample_images() -> list[Any]:
    """Three float (3, H, W) scenes of synthetic shapes in [0, 1], of two sizes."""
    import numpy as np
    import torch

    from visiontool.data.synth import render_scene

    rng = np.random.default_rng(7)
    images = []
    for size in (256, 256, 320):
        pixels, _, _ = render_scene(rng, size)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0)
    return images


def _metadata(predictor: Any) -> dict[str, str]:
    """What `models.onnx_model` needs to rebuild the pipeline: the model's info, and the
    detector's resize settings (the head's pre-resize reads them)."""
    data = {"visiontool_model_info": json.dumps(predictor.loaded.info.to_dict())}
    module = predictor.loaded.module
    transform = getattr(module, "transform", None)
    if transform is not None:
        data["visiontool_transform"] = json.dumps({
            "min_size": list(transform.min_size), "max_size": int(transform.max_size),
            "fixed_size": list(transform.fixed_size) if getattr(transform, "fixed_size", None)
            else None,
        })  # fmt: skip
    return data


def _to_onnx(wrapper: Any, sample: Any, path: Path, predictor: Any, dynamic: bool,
             metadata: dict[str, str]) -> None:  # fmt: skip
    import onnx
    import torch

    if _is_detector(predictor):
        names = (["image"], ["boxes", "scores", "labels"])
        axes = {"image": {1: "height", 2: "width"}, "boxes": {0: "n"}, "scores": {0: "n"},
                "labels": {0: "n"}} if dynamic else {"boxes": {0: "n"}, "scores": {0: "n"},
                                                     "labels": {0: "n"}}  # fmt: skip
    else:
        names = (["images"], ["logits"])
        axes = {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if (
            dynamic) else {"images": {0: "batch"}, "logits": {0: "batch"}}  # fmt: skip
    torch.onnx.export(wrapper, (sample,), str(path), input_names=names[0],
                      output_names=names[1], dynamic_axes=axes, opset_version=OPSET,
                      dynamo=False)  # fmt: skip
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _to_torchscript(wrapper: Any, sample: Any, path: Path, metadata: dict[str, str]) -> None:
    import torch

    traced = torch.jit.trace(wrapper, (sample,), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={k: v.encode() for k, v in metadata.items()})


def exported_runner(path: Path, fmt: str, device: Any) -> Any:
    """The exported model, loaded once, as a function: sample -> outputs as CPU tensors."""
    import torch

    if fmt == "onnx":
        from visiontool.models.onnx_model import onnx_session

        session = onnx_session(path)
        name = session.get_inputs()[0].name

        def run_onnx(sample: Any) -> list[Any]:
            feed = {name: sample.detach().cpu().numpy()}  # the sample's dtype, as exported
            return [torch.from_numpy(o) for o in session.run(None, feed)]

        return run_onnx
    loaded = torch.jit.load(str(path), map_location=device)

    def run_script(sample: Any) -> list[Any]:
        with torch.no_grad():
            out = loaded(sample)
        return [o.cpu() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return run_script


def compare(
    wrapper: Any, path: Path, fmt: str, samples: list[Any], *, detector: bool, half: bool = False
) -> dict:
    """Eager vs exported on every sample; raises ModelLoadError when they disagree. Logits of
    an fp16 export may differ by 1e-2 (fp16 keeps ~3 significant digits); the box and score
    tolerances are the same for both."""
    import torch

    from visiontool.errors import ModelLoadError

    worst_box, worst_score, worst_logit, detections = 0.0, 0.0, 0.0, 0
    run_exported = exported_runner(path, fmt, samples[0].device)
    with torch.no_grad():
        for sample in samples:
            eager = wrapper(sample)
            exported = run_exported(sample)
            if detector:
                boxes, scores, labels = (t.detach().cpu().float() for t in eager)
                eboxes, escores, elabels = (t.float() for t in exported[:3])
                keep = scores >= 0.05  # the candidates near the floor may swap places
                ekeep = escores >= 0.05
                if int(keep.sum()) != int(ekeep.sum()) or not torch.equal(
                    labels[keep], elabels[ekeep]
                ):
                    raise ModelLoadError(f"exported model disagrees with the eager one: "
                                         f"{int(keep.sum())} vs {int(ekeep.sum())} detections "
                                         "or other classes")  # fmt: skip
                if keep.any():
                    box_gap = float((boxes[keep] - eboxes[ekeep]).abs().max())
                    score_gap = float((scores[keep] - escores[ekeep]).abs().max())
                    worst_box, worst_score = max(worst_box, box_gap), max(worst_score, score_gap)
                detections += int(keep.sum())
            else:
                worst_logit = max(
                    worst_logit, float((eager.float().cpu() - exported[0]).abs().max())
                )
    check = {"images": len(samples), "compared": "detections" if detector else "logits",
             "detections": detections, "max_box_px": worst_box,
             "max_score_diff": worst_score, "max_logit_diff": worst_logit}  # fmt: skip
    if worst_logit > (LOGIT_TOLERANCE_HALF if half else LOGIT_TOLERANCE):
        raise ModelLoadError(f"exported model disagrees with the eager one: logits differ by "
                             f"up to {worst_logit:.4f}")  # fmt: skip
    if worst_box > BOX_TOLERANCE_PX or worst_score > SCORE_TOLERANCE:
        raise ModelLoadError(f"exported model disagrees with the eager one: boxes differ by up "
                             f"to {worst_box:.2f} px, scores by {worst_score:.4f}")  # fmt: skip
    return check
