"""Registry rows as plain dicts for `visiontool models` (with whether each model's default
weights work offline), and the heads and backbones for `visiontool models --heads`. No torch
needed: weight files are looked up by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.models.specs import ModelSpec


def list_models() -> list[dict[str, Any]]:
    """One dict per listed model: name, aliases, task, weights, classes, input_size..."""
    return [_row(spec) for spec in registry.specs("model") if not spec.hidden]


def _row(spec: ModelSpec) -> dict[str, Any]:
    classes = spec.info(spec.weights).classes if spec.info is not None else []
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "task": spec.task,
        "weights": spec.weights,
        **availability(spec),
        "classes": classes,
        "dataset": spec.dataset,
        "input_size": spec.input_size,
        "description": spec.description,
    }


def availability(spec: ModelSpec) -> dict[str, Any]:
    """Whether the default weights of `spec` can be loaded without a network, from files alone
    (no torch, no download):

    - `availability`: "shipped" (inside the package), "cached" (torchvision weights already in
      torch's hub cache), "download" (fetched on first use), "missing" (a shipped file that is
      not there) or "none" (no default weights: trained per data set, pass --weights);
    - `offline`: True for shipped and cached, False for download and missing, None for none;
    - `weights_path`: the file, or where torchvision will cache it; `weights_url`: where it is
      downloaded from; `download_mb`: its size when it still has to be downloaded.
    """
    state: dict[str, Any] = {"availability": "none", "offline": None, "weights_path": None,
                             "weights_url": None, "download_mb": None}  # fmt: skip
    if spec.pretrained is None:
        return state
    if spec.source == "shipped":
        from visiontool.models.shipped import weights_dir

        path = weights_dir() / Path(spec.weights).name
        found = path.is_file()
        state.update(availability="shipped" if found else "missing", offline=found,
                     weights_path=str(path))  # fmt: skip
        return state
    from visiontool.models.zoo import WEIGHTS_URL, zoo_entry

    entry = zoo_entry(spec.name) if spec.source == "torchvision" else None
    if entry is None or not entry.weights_file:  # a file we cannot name: assume a download
        state.update(availability="download", offline=False)
        return state
    from visiontool.io.weights import cache_dir

    path = cache_dir() / entry.weights_file
    cached = path.is_file()
    state.update(availability="cached" if cached else "download", offline=cached,
                 weights_path=str(path), weights_url=WEIGHTS_URL + entry.weights_file,
                 download_mb=None if cached else entry.weights_mb)  # fmt: skip
    return state


def list_heads() -> list[dict[str, Any]]:
    """Detection heads for `train --head`, with their layout and training defaults."""
    from visiontool.models.compose import arch_options

    return [
        {
            "name": head.name,
            "fpn": {True: "required", False: "none", None: "optional"}[head.fpn],
            "backbones": list(head.backbones) or ["any"],
            "default_backbone": head.default_backbone,
            "input_size": head.default_imgsz,
            "arch_options": arch_options(head),
            "description": head.description,
        }
        for head in registry.specs("head")
    ]


def list_backbones() -> list[dict[str, Any]]:
    return [
        {"name": b.name, "weights": b.weights, "description": b.description}
        for b in registry.specs("backbone")
    ]
