"""`ModelInfo`: what the rest of the tool needs to know about a model besides its weights.

It travels inside checkpoints (as a plain dict) so that `detect`/`eval` can rebuild a model
from a checkpoint alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from visiontool.models.class_names import NON_CLASSES


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a built model.

    `raw_classes` is the model's own output label space (index = label the network emits, with
    '__background__'/'N/A' for labels that are not classes); `classes` is the 0-based class list
    that results use; `category_ids` gives each class its id in COCO-format files.
    `build` holds the keyword arguments that rebuild the architecture through the registry.
    """

    name: str
    task: str  # "detect" | "classify"
    classes: list[str]
    raw_classes: list[str]
    category_ids: list[int]
    input_size: int
    build: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    weights: str = "none"

    def raw_to_class(self) -> list[int]:
        """For each raw label, its class id (or -1 for background and gaps)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [-1 if name in NON_CLASSES else index.get(name, -1) for name in self.raw_classes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def detector_classes(classes: list[str]) -> tuple[list[str], list[int]]:
    """Raw label space and category ids of a detector trained on `classes` (background = 0)."""
    return ["__background__", *classes], list(range(1, len(classes) + 1))
