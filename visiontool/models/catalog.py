"""Registry rows as plain dicts for `visiontool models`, and the heads and backbones for
`visiontool models --parts` (no torch needed)."""

from __future__ import annotations

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
        "classes": classes,
        "dataset": spec.dataset,
        "input_size": spec.input_size,
        "description": spec.description,
    }


def list_heads() -> list[dict[str, Any]]:
    """Detection heads for `train --head`, with their layout and training defaults."""
    return [
        {
            "name": head.name,
            "fpn": {True: "required", False: "none", None: "optional"}[head.fpn],
            "backbones": list(head.backbones) or ["any"],
            "default_backbone": head.default_backbone,
            "input_size": head.default_imgsz,
            "description": head.description,
        }
        for head in registry.specs("head")
    ]


def list_backbones() -> list[dict[str, Any]]:
    return [
        {"name": b.name, "weights": b.weights, "description": b.description}
        for b in registry.specs("backbone")
    ]
