"""Build a ready-to-run model from a registry name and a weights choice.

`load_model` is the one function every command uses: it resolves `--model`/`--weights`
(DEFAULT, none, or a checkpoint path), rebuilds architectures recorded in visiontool checkpoints,
checks that weights fit, and returns the module together with its `ModelInfo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError, ModelLoadError
from visiontool.io.checkpoint import extract_state_dict, is_visiontool_checkpoint, read_checkpoint
from visiontool.models import class_names
from visiontool.models.info import ModelInfo

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class LoadedModel:
    """A built model in eval mode on its device, and what results need to know about it."""

    module: Any  # torch.nn.Module
    info: ModelInfo
    device: Any  # torch.device


def weights_kind(weights: str | None) -> str:
    """Classify a --weights value: 'default', 'none' or 'path'."""
    if weights is None or weights.lower() in ("none", "random"):
        return "none"
    if weights.upper() == "DEFAULT":
        return "default"
    return "path"


def zoo_info(entry: registry.Entry, *, weights: str) -> ModelInfo:
    """ModelInfo of a torchvision zoo model with its pretrained label space."""
    meta = entry.meta
    if meta["dataset"] == "coco":
        return ModelInfo(
            name=entry.name,
            task=meta["task"],
            classes=class_names.coco80(),
            raw_classes=class_names.coco91(),
            category_ids=class_names.coco80_category_ids(),
            input_size=meta["input_size"],
            build={"model": entry.name},
            weights=weights,
        )
    names = class_names.imagenet()
    return ModelInfo(
        name=entry.name,
        task=meta["task"],
        classes=names,
        raw_classes=names,
        category_ids=list(range(len(names))),
        input_size=meta["input_size"],
        build={"model": entry.name},
        preprocess={"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        weights=weights,
    )


def entry_info(entry: registry.Entry, *, weights: str) -> ModelInfo:
    """ModelInfo for a registry entry built without a checkpoint."""
    if entry.meta.get("source") == "torchvision":
        return zoo_info(entry, weights=weights)
    make_info = entry.meta.get("make_info")
    if make_info is None:
        raise ConfigError(
            f"model {entry.name!r} has no default weights or classes; pass --weights PATH"
        )
    return make_info(weights=weights)


def load_model(
    model: str | None = None,
    weights: str | None = "DEFAULT",
    *,
    device: Any = "cpu",
) -> LoadedModel:
    """Build `model` with `weights` ("DEFAULT", "none"/None, or a checkpoint path)."""
    import torch

    kind = weights_kind(weights)
    if kind == "path":
        module, info = _from_file(model, Path(str(weights)))
    else:
        if model is None:
            raise ConfigError("no model given: pass --model NAME or --weights CHECKPOINT")
        entry = registry.get("model", model)
        module, info = _from_registry(entry, pretrained=kind == "default")
    device = torch.device(device)
    module.eval().to(device)
    return LoadedModel(module=module, info=info, device=device)


def _from_registry(entry: registry.Entry, *, pretrained: bool) -> tuple[Any, ModelInfo]:
    if entry.meta.get("source") == "torchvision":
        from visiontool.io.weights import ensure_downloadable
        from visiontool.models.zoo import weights_enum

        enum = weights_enum(entry.meta["spec"]) if pretrained else None
        if enum is not None:
            ensure_downloadable(enum.url, model=entry.name)
        label = f"torchvision {entry.meta['weights']}" if pretrained else "none (random init)"
        module = entry.builder(weights=enum)
        return module, zoo_info(entry, weights=label)
    checkpoint = entry.meta.get("checkpoint")
    if checkpoint:
        path = Path(checkpoint() if callable(checkpoint) else checkpoint)
        if pretrained:
            return _from_file(entry.name, path)
        # --weights none for a shipped model: its architecture, freshly initialised
        recorded = read_checkpoint(path)
        info = ModelInfo.from_dict({**recorded["model_info"], "weights": "none (random init)"})
        return _build(info), info
    info = entry_info(entry, weights="none (random init)")
    return _build(info), info


def _build(info: ModelInfo) -> Any:
    """Rebuild an architecture from `info.build` through the registry."""
    build = dict(info.build)
    name = build.pop("model", info.name)
    entry = registry.get("model", name)
    return entry.builder(weights=None, **build)


def _from_file(model: str | None, path: Path) -> tuple[Any, ModelInfo]:
    obj = read_checkpoint(path)
    state_dict = extract_state_dict(obj, path)
    if is_visiontool_checkpoint(obj):
        info = ModelInfo.from_dict(obj["model_info"])
        info = ModelInfo.from_dict({**info.to_dict(), "weights": str(path)})
        if model is not None and not _same_model(model, info):
            raise ModelLoadError(
                f"{path} is a {info.name!r} checkpoint but --model {model!r} was given: "
                f"drop --model or pass --model {info.name}"
            )
        try:
            module = _build(info)
        except ConfigError as exc:
            raise ModelLoadError(f"{path}: cannot rebuild its architecture ({exc})") from exc
    else:
        if model is None:
            raise ConfigError(
                f"{path} is a plain state_dict with no architecture: name it with --model"
            )
        entry = registry.get("model", model)
        info = entry_info(entry, weights=str(path))
        module = _from_registry(entry, pretrained=False)[0]
    load_state(module, state_dict, path=path, info=info)
    return module, info


def _same_model(name: str, info: ModelInfo) -> bool:
    if name == info.name:
        return True
    if registry.exists("model", name) and registry.exists("model", info.name):
        return registry.get("model", name).name == registry.get("model", info.name).name
    return False


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
