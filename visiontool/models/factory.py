"""The one front door to models: `create_model(name, *, weights, num_classes, **arch)`.

Every command builds models through here (timm's `create_model`, torchvision's `get_model`):
`detect`, `eval` and `benchmark --task pipeline` through `load_model` (create, then eval mode
on a device), training and `benchmark`'s model rows through `create_model` itself,
checkpoints through `load_checkpoint`. A registry
`ModelSpec` says how to build each name; this module only resolves the weights choice:

- `weights=None`/"none": the architecture with random weights.
- `weights="DEFAULT"`: the model's own pretrained weights (torchvision's, downloaded once and
  cached, or a shipped checkpoint).
- `weights=PATH`: a visiontool checkpoint (it records its architecture, so `name` may be None)
  or a plain state dict for `name`.

`num_classes` different from the weights' label space swaps the class layers for fresh ones
(the fine-tuning recipe); their parameter names are left on the module as
`fresh_parameters`. The returned module carries `model_info` (a `ModelInfo`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError, ModelLoadError
from visiontool.io.checkpoint import extract_state_dict, is_visiontool_checkpoint, read_checkpoint
from visiontool.io.weights import weights_kind
from visiontool.models.info import ModelInfo
from visiontool.models.specs import HeadSpec, ModelSpec

RANDOM = "none (random init)"


@dataclass
class LoadedModel:
    """A built model in eval mode on its device, and what results need to know about it."""

    module: Any  # torch.nn.Module
    info: ModelInfo
    device: Any  # torch.device

    @property
    def head(self) -> HeadSpec | None:
        return head_of(self.info)


def create_model(
    name: str | None,
    /,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    **arch: Any,
) -> Any:
    """Build registry model `name` (see the module docstring). `num_classes` counts the
    background for detectors (torchvision's convention). `arch` goes to the spec's builder
    (e.g. `head`, `backbone`, `imgsz` for the composed "detector"; `in_channels`)."""
    kind = weights_kind(weights)
    if kind == "path" and str(weights).lower().endswith(".onnx"):
        from visiontool.models.onnx_model import load_onnx

        module, info = load_onnx(str(weights))  # exported: runs as it is (no new classes)
        module.model_info, module.fresh_parameters = info, ()
        return module
    if kind == "path":
        module, info = _from_file(name, Path(str(weights)))
    elif name is None:
        raise ConfigError("no model given: pass --model NAME or --weights CHECKPOINT")
    else:
        spec: ModelSpec = registry.get("model", name)
        module, info = _from_spec(spec, pretrained=kind == "default", num_classes=num_classes,
                                  arch=arch)  # fmt: skip
    fresh: list[str] = []
    if num_classes is not None and _outputs(info) != num_classes and kind != "none":
        fresh = registry.get("model", _architecture_name(info)).replace_class_layers(
            module, num_classes
        )
    module.model_info = info
    module.fresh_parameters = tuple(fresh)
    return module


def load_model(
    model: str | None = None, weights: str | Path | None = "DEFAULT", *, device: Any = "cpu"
) -> LoadedModel:
    """`create_model` for inference: in eval mode on `device`, with its `ModelInfo`."""
    import torch

    module = create_model(model, weights=weights)
    device = torch.device(device)
    module.eval().to(device)
    return LoadedModel(module=module, info=module.model_info, device=device)


def load_checkpoint(path: Path, model: str | None = None) -> tuple[Any, ModelInfo]:
    """A model and its info from a checkpoint file (see `create_model` for `model`)."""
    return _from_file(model, Path(path))


def rebuild(info: ModelInfo) -> Any:
    """The architecture a checkpoint's `info.build` records, with random weights."""
    build = dict(info.build)
    name = build.pop("model", info.name)
    return registry.get("model", name).build(**build)


def head_of(info: ModelInfo) -> HeadSpec | None:
    """The head spec of a detector: the one its build records (composed detectors) or its
    registry model's head family (torchvision detectors); None for classifiers."""
    head = info.build.get("head")
    if head is None:
        name = info.build.get("model", info.name)
        head = registry.get("model", name).head if registry.exists("model", name) else None
    return registry.get("head", head) if head else None


def _from_spec(
    spec: ModelSpec, *, pretrained: bool, num_classes: int | None, arch: dict[str, Any]
) -> tuple[Any, ModelInfo]:
    if pretrained:
        if spec.pretrained is None:
            raise ConfigError(
                f"model {spec.name!r} is built per data set and has no default weights: "
                "pass --weights CHECKPOINT (a visiontool checkpoint records its architecture)"
            )
        if arch:
            raise ConfigError(
                f"{', '.join(sorted(arch))} cannot change the pretrained model {spec.name!r}"
            )
        return spec.pretrained()
    if spec.hidden and not arch:
        raise ConfigError(
            f"{spec.name!r} only rebuilds architectures recorded in checkpoints: pass "
            "--weights CHECKPOINT, or a model from `visiontool models`"
        )
    if num_classes is not None:
        arch = {**arch, "num_classes": num_classes}
    module = spec.build(**arch)
    build = dict(getattr(module, "build_kwargs", None) or {"model": spec.name, **arch})
    if spec.info is not None:
        info = spec.info(RANDOM)
        return module, ModelInfo.from_dict({**info.to_dict(), "build": build})
    info = ModelInfo(name=spec.name, task=spec.task, classes=[], raw_classes=[], category_ids=[],
                     input_size=spec.input_size or 0, build=build,
                     preprocess=dict(spec.preprocess), weights=RANDOM)  # fmt: skip
    return module, info


def _from_file(model: str | None, path: Path) -> tuple[Any, ModelInfo]:
    obj = read_checkpoint(path)
    state_dict = extract_state_dict(obj, path)
    if is_visiontool_checkpoint(obj):
        info = checkpoint_info(obj, path)
        if model is not None and not _same_model(model, info):
            raise ModelLoadError(
                f"{path} is a {info.name!r} checkpoint but --model {model!r} was given: "
                f"drop --model or pass --model {info.name}"
            )
        try:
            module = rebuild(info)
        except ModelLoadError:
            raise
        except (ConfigError, TypeError, ValueError, KeyError, AttributeError, RuntimeError,
                IndexError) as exc:  # fmt: skip
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(
                f"{path}: cannot rebuild its architecture from model_info.build ({first}); "
                "the checkpoint was edited or comes from another version: retrain or re-export it"
            ) from exc
    else:
        if model is None:
            raise ConfigError(
                f"{path} is a plain state_dict with no architecture: name it with --model"
            )
        spec: ModelSpec = registry.get("model", model)
        if spec.info is None:
            raise ConfigError(
                f"model {spec.name!r} has no default classes: a plain state_dict cannot say "
                "them; pass a visiontool checkpoint"
            )
        info = spec.info(str(path))
        module = spec.build()
    load_state(module, state_dict, path=path, info=info)
    return module, info


def checkpoint_info(obj: dict[str, Any], path: Path) -> ModelInfo:
    """The checked `ModelInfo` of a visiontool checkpoint: types (`ModelInfo.from_dict`), and a
    class list that fits the network it records (a detector has len(raw_classes) class
    outputs, background included; a classifier len(classes)). Any problem is one
    `ModelLoadError` naming the file (exit 3), never a model that runs with wrong labels."""
    data = obj.get("model_info")
    try:
        info = ModelInfo.from_dict({**data, "weights": str(path)} if isinstance(data, dict)
                                   else data)  # fmt: skip
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"{path}: {exc}; the checkpoint's metadata was edited or is damaged: retrain or "
            "re-export it"
        ) from None
    recorded = info.build.get("num_classes")
    if recorded is not None and recorded != info.class_outputs():
        raise ModelLoadError(
            f"{path}: model_info lists {len(info.classes)} classes "
            f"({info.class_outputs()} class outputs) but its network has {recorded}: the "
            "class list does not match the weights; retrain or re-export the checkpoint"
        )
    return info


def _same_model(name: str, info: ModelInfo) -> bool:
    if name == info.name:
        return True
    if registry.exists("model", name) and registry.exists("model", info.name):
        return registry.get("model", name).name == registry.get("model", info.name).name
    return False


def _architecture_name(info: ModelInfo) -> str:
    return info.build.get("model", info.name)


def _outputs(info: ModelInfo) -> int:
    """Class outputs of the model's label space (with background for detectors)."""
    return len(info.raw_classes)


def load_state(module: Any, state_dict: dict[str, Any], *, path: Path, info: ModelInfo) -> None:
    """Load strictly; turn key and shape mismatches into one readable line."""
    own = module.state_dict()
    shape_errors = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    missing = [key for key in own if key not in state_dict and not _optional_key(key)]
    unexpected = [key for key in state_dict if key not in own and not _optional_key(key)]
    if shape_errors or missing or unexpected:
        parts = []
        if shape_errors:
            parts.append(f"{len(shape_errors)} shape mismatches (first {shape_errors[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]})")
        hint = _class_hint(shape_errors, info)
        raise ModelLoadError(
            f"weights in {path} do not fit model {info.name!r}: {'; '.join(parts)}{hint}"
        )
    module.load_state_dict(state_dict, strict=False)


def _optional_key(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _class_hint(shape_errors: list[str], info: ModelInfo) -> str:
    for error in shape_errors:
        if re.search(r"(cls|class|logits|fc|classifier)", error):
            return f" (the model expects {len(info.raw_classes)} outputs; different classes?)"
    return ""
