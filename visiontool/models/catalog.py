"""Registry rows as plain dicts for `visiontool models` (no torch needed)."""

from __future__ import annotations

from typing import Any

from visiontool import registry
from visiontool.models.loader import entry_info


def list_models() -> list[dict[str, Any]]:
    """One dict per registered model: name, aliases, task, weights, classes, input_size."""
    rows = []
    for entry in registry.entries("model"):
        if entry.meta.get("hidden"):
            continue
        try:
            info = entry_info(entry, weights=entry.meta.get("weights", "none"))
            classes = info.classes
        except Exception:  # a family without default classes (trained per data set)
            classes = []
        rows.append(
            {
                "name": entry.name,
                "aliases": list(entry.aliases),
                "task": entry.meta.get("task", "?"),
                "weights": entry.meta.get("weights", "none"),
                "classes": classes,
                "dataset": entry.meta.get("dataset", "custom"),
                "input_size": entry.meta.get("input_size"),
                "description": entry.meta.get("description", ""),
            }
        )
    return rows
