"""`ModelInfo`: what the rest of the tool needs to know about a model besides its weights.

It travels inside checkpoints (as a plain dict) so that `detect`/`eval` can rebuild a model
from a checkpoint alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from visiontool.errors import ModelLoadError
from visiontool.models.class_names import NON_CLASSES

TASKS = ("detect", "classify", "single", "multilabel")  # `visiontool.tasks` says what each is


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a built model.

    `raw_classes` is the model's own output label space (index = label the network emits, with
    '__background__'/'N/A' for labels that are not classes); `classes` is the 0-based class list
    that results use; `category_ids` gives each class its id in COCO-format files.
    `build` holds the keyword arguments that rebuild the architecture through the registry.
    `conf` is the score threshold predictions use when the user gives none (a multi-label
    model's label threshold, `train --threshold`); None: the task's default.
    """

    name: str
    task: str  # "detect" | "classify" | "single" | "multilabel"
    classes: list[str]
    raw_classes: list[str]
    category_ids: list[int]
    input_size: int
    build: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    weights: str = "none"
    conf: float | None = None

    def raw_to_class(self) -> list[int]:
        """For each raw label, its class id (or -1 for background and gaps)."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [-1 if name in NON_CLASSES else index.get(name, -1) for name in self.raw_classes]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def class_outputs(self) -> int:
        """How many class outputs the network has: the raw label space of a detector (with
        its background), the class list of any other model."""
        return len(self.raw_classes) if self.task == "detect" else len(self.classes)

    @classmethod
    def from_dict(cls, data: Any) -> ModelInfo:
        """A `ModelInfo` from its dict (as stored in checkpoints), checked field by field.

        Raises `ModelLoadError` naming the first bad field: a checkpoint's metadata is input,
        and a wrong type or a class list that does not fit the label space must stop the load
        (exit 3), not run with wrong labels or fail later with a traceback."""
        problem = _problem(data)
        if problem:
            raise ModelLoadError(f"model_info {problem}")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("classes", "raw_classes"):
            values[key] = [str(x) for x in values[key]]
        values["category_ids"] = [int(x) for x in values["category_ids"]]
        values["input_size"] = int(values["input_size"])
        if values.get("conf") is not None:
            values["conf"] = float(values["conf"])
        return cls(**values)


def detector_classes(classes: list[str]) -> tuple[list[str], list[int]]:
    """Raw label space and category ids of a detector trained on `classes` (background = 0)."""
    return ["__background__", *classes], list(range(1, len(classes) + 1))


def _is_int(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value)


def _problem(data: Any) -> str | None:
    """What is wrong with a model_info dict, or None."""
    if not isinstance(data, dict):
        return f"is missing or not a mapping (got {type(data).__name__})"
    for key in ("name", "task", "classes", "raw_classes", "category_ids", "input_size"):
        if key not in data:
            return f"has no {key!r}"
    name, task = data["name"], data["task"]
    if not isinstance(name, str) or not name.strip():
        return f"'name' must be a non-empty string, got {name!r}"[:200]
    if task not in TASKS:
        return f"'task' must be one of {', '.join(TASKS)}, got {task!r}"[:200]
    classes, raw = data["classes"], data["raw_classes"]
    for key, value in (("classes", classes), ("raw_classes", raw)):
        if not _str_list(value):
            return f"{key!r} must be a list of class names (strings)"
    ids = data["category_ids"]
    if not isinstance(ids, (list, tuple)) or not all(_is_int(x) for x in ids):
        return "'category_ids' must be a list of integers"
    if len(ids) != len(classes):
        return f"has {len(ids)} category_ids for {len(classes)} classes"
    if len(set(classes)) != len(classes):
        dup = next(c for c in classes if classes.count(c) > 1)
        return f"lists class {dup!r} twice"
    size = data["input_size"]
    if not _is_int(size) or size < 0:
        return f"'input_size' must be a whole number of pixels, got {size!r}"[:200]
    for key in ("build", "preprocess"):
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return f"{key!r} must be a mapping of names to values"
    build = data.get("build", {})
    if "model" in build and not isinstance(build["model"], str):
        return "'build' names its model with a non-string"
    if "num_classes" in build and build["num_classes"] is not None and \
            not _is_int(build["num_classes"]):  # fmt: skip
        return "'build' has a non-integer num_classes"
    if not isinstance(data.get("weights", "none"), str):
        return "'weights' must be a string"
    conf = data.get("conf")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, (int, float))
                             or not 0.0 <= conf <= 1.0):  # fmt: skip
        return f"'conf' must be a score threshold in [0, 1], got {conf!r}"[:200]
    named = [r for r in raw if r not in NON_CLASSES]
    if task != "detect" and list(raw) != list(classes):
        return (
            f"'raw_classes' ({len(raw)}) differ from 'classes' ({len(classes)}) of a {task} model"
        )
    if sorted(named) != sorted(classes):
        return (
            f"'classes' ({len(classes)} names) do not match the network's label space "
            f"'raw_classes' ({len(named)} names)"
        )
    return None
