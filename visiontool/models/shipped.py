"""Models trained by this project, shipped inside the package under `visiontool/weights/`
(package data, so a wheel install has them too; see visiontool/weights/manifest.json).

They make the tool useful offline: `--model shapes-frcnn` needs no download and no --weights.
Each manifest entry is registered as a model; its checkpoint is verified against the recorded
sha256 before loading, so a truncated or swapped file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ModelLoadError
from visiontool.models.info import ModelInfo, detector_classes
from visiontool.models.specs import ModelSpec

WEIGHTS_ENV = "VISIONTOOL_WEIGHTS_DIR"
# The names the package ships (their manifest entries say everything else). Known without the
# manifest so that a package whose manifest is missing or broken refuses them with a clear
# message instead of calling them unknown; tests check it against the manifest.
SHIPPED_NAMES = ("digits-lenet", "shapes-frcnn", "shapes-tinyssd")
_FIX = (
    "reinstall visiontool, or in a checkout restore it with `git checkout -- visiontool/weights/`"
)


def weights_dir() -> Path:
    """$VISIONTOOL_WEIGHTS_DIR, else the `weights/` folder inside the installed package."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override)
    return Path(str(resources.files("visiontool") / "weights"))


def read_manifest(folder: Path | None = None) -> list[dict[str, Any]]:
    """The manifest's model entries; `ModelLoadError` naming the file if it is missing or
    unreadable (never an empty list that would make every shipped name "unknown")."""
    path = (folder or weights_dir()) / "manifest.json"
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except FileNotFoundError:
        raise ModelLoadError(f"the shipped-model manifest {path} is missing; {_FIX}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"the shipped-model manifest {path} cannot be read ({error}); {_FIX}"
        ) from None
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ModelLoadError(f"the shipped-model manifest {path} is malformed; {_FIX}")
    return models


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_checkpoint(entry: dict[str, Any]) -> Path:
    """The entry's checkpoint path, after checking it exists and matches its sha256."""
    path = weights_dir() / entry["file"]
    if not path.is_file():
        raise ModelLoadError(
            f"shipped weights for {entry['name']!r} are missing: {path} ({_FIX}, "
            "or rebuild it with `make weights`)"
        )
    if entry.get("sha256") and sha256(path) != entry["sha256"]:
        raise ModelLoadError(
            f"{path} does not match the sha256 in its manifest.json (corrupt or replaced); "
            f"{_FIX}, or rebuild it with `make weights`"
        )
    return path


def _info(entry: dict[str, Any], *, weights: str) -> ModelInfo:
    classes = list(entry["classes"])
    if entry["task"] == "detect":
        raw, ids = detector_classes(classes)
    else:
        raw, ids = classes, list(range(len(classes)))
    return ModelInfo(name=entry["name"], task=entry["task"], classes=classes, raw_classes=raw,
                     category_ids=ids, input_size=int(entry["input_size"]),
                     weights=weights)  # fmt: skip


def _pretrained(entry: dict[str, Any]) -> tuple[Any, ModelInfo]:
    from visiontool.models.factory import load_checkpoint

    return load_checkpoint(verified_checkpoint(entry))


def _architecture(entry: dict[str, Any], *, num_classes: int | None = None) -> Any:
    """The shipped model's architecture, freshly initialised (`--weights none`); with
    `num_classes` (counting the background for detectors) its class layers fit that many."""
    from visiontool.io.checkpoint import read_checkpoint
    from visiontool.models.factory import rebuild

    recorded = ModelInfo.from_dict(read_checkpoint(verified_checkpoint(entry))["model_info"])
    module = rebuild(recorded)
    if num_classes is not None and num_classes != len(recorded.raw_classes):
        registry.get("model", entry["name"]).replace_class_layers(module, num_classes)
    return module


def _register(entry: dict[str, Any]) -> None:
    from visiontool.models.own import replace_head_class_layers, replace_last_linear

    detector = entry["task"] == "detect"
    registry.add(
        "model",
        ModelSpec(
            name=entry["name"],
            task=entry["task"],
            build=partial(_architecture, entry),
            pretrained=partial(_pretrained, entry),
            info=lambda weights: _info(entry, weights=weights),
            replace_class_layers=replace_head_class_layers if detector else replace_last_linear,
            source="shipped",
            dataset="synthetic",
            input_size=int(entry["input_size"]),
            weights=f"weights/{entry['file']}",
            checkpoint=lambda: verified_checkpoint(entry),
            description=entry.get("description", ""),
        ),
    )


# A missing or broken manifest must not break listing or the other models: it is kept here,
# and each of SHIPPED_NAMES is to be refused with it when asked for (not "unknown model").
MANIFEST_ERROR: ModelLoadError | None = None
try:
    _MANIFEST = read_manifest()
except ModelLoadError as _error:
    _MANIFEST, MANIFEST_ERROR = [], _error
for _entry in _MANIFEST:
    _register(_entry)


def _refuse(error: ModelLoadError, *_: Any, **__: Any) -> Any:
    raise error


if MANIFEST_ERROR is not None:  # known names answer with the manifest's problem, exit 3
    for _name in SHIPPED_NAMES:
        registry.add(
            "model",
            ModelSpec(
                name=_name,
                task="detect" if _name.endswith("frcnn") else "classify",
                build=partial(_refuse, MANIFEST_ERROR),
                pretrained=partial(_refuse, MANIFEST_ERROR),
                replace_class_layers=partial(_refuse, MANIFEST_ERROR),
                source="shipped",
                hidden=True,
                description="shipped model whose manifest cannot be read",
            ),
        )
