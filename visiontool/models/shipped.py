"""Models trained by this project and committed under `weights/` (see weights/manifest.json).

They make the tool useful offline: `--model shapes-frcnn` needs no download and no --weights.
Each manifest entry is registered as a model; its checkpoint is verified against the recorded
sha256 before loading, so a truncated or swapped file is refused with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.errors import ModelLoadError
from visiontool.models.info import ModelInfo, detector_classes

WEIGHTS_ENV = "VISIONTOOL_WEIGHTS_DIR"


def weights_dir() -> Path:
    """$VISIONTOOL_WEIGHTS_DIR, else the repository's weights/ folder."""
    override = os.environ.get(WEIGHTS_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[2] / "weights"


def read_manifest(folder: Path | None = None) -> list[dict[str, Any]]:
    path = (folder or weights_dir()) / "manifest.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return list(data.get("models", []))


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
            f"shipped weights for {entry['name']!r} are missing: {path} (restore it with "
            f"`git checkout -- weights/` or rebuild it with `make weights`)"
        )
    if entry.get("sha256") and sha256(path) != entry["sha256"]:
        raise ModelLoadError(
            f"{path} does not match the sha256 in weights/manifest.json (corrupt or replaced); "
            "restore it with `git checkout -- weights/` or rebuild with `make weights`"
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


def _register(entry: dict[str, Any]) -> None:
    def builder(**_: Any) -> Any:
        raise ModelLoadError(f"{entry['name']!r} is loaded from its checkpoint, not built")

    registry.add(
        registry.Entry(
            kind="model",
            name=entry["name"],
            builder=builder,
            meta={
                "task": entry["task"],
                "source": "visiontool",
                "dataset": "synthetic",
                "weights": f"weights/{entry['file']}",
                "input_size": entry["input_size"],
                "description": entry.get("description", ""),
                "checkpoint": lambda: verified_checkpoint(entry),
                "make_info": lambda weights: _info(entry, weights=weights),
            },
        )
    )


for _entry in read_manifest():
    _register(_entry)
