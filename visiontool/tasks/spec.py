"""`TaskSpec`: everything the engine may know about a task, and `get_task`.

A task says what a model learns and how its outputs are read: the data sets it reads and how
it turns them into training targets, the loss (when the model does not compute its own), the
validation and `eval` numbers (and which one picks `best.pt`), how a prediction becomes an
`ImageResult`, and the console's columns. `train`, `detect`, `eval` and `benchmark` ask the
spec of the model's task (`ModelInfo.task`) and never branch on a task's name.

Two model interfaces cover every task (`output`):
- "boxes": torchvision's detector interface: `model(images, targets)` (a list of float
  (3, H, W) images in [0, 1]) returns a loss dict in train mode, and `model(images)` one
  `{"boxes", "labels", "scores"}` dict per image in eval mode. The model normalises and
  resizes inside and computes its own loss (`loss` is None).
- "scores": a classifier: a normalised (N, C, H, W) batch in, (N, K) logits out; `loss` scores
  the logits against `targets`, `activation` turns them into per-class scores.

Like the other specs, this is a frozen dataclass whose behaviour fields are functions; the
modules that define tasks import torch inside those functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from visiontool import registry


@dataclass(frozen=True)
class TaskScore:
    """A validation or `eval` score of a per-image task: the scalars (results.csv, --metric,
    --fail-under, metrics.json) and one row per class, `all` first."""

    metrics: dict[str, float]
    per_class: list[dict[str, Any]]


def _same(dataset: Any) -> Any:
    return dataset


def _no_conf(cfg: Any) -> float | None:
    return None


def _sgd_lr(batch: int) -> float:
    return 0.01


@dataclass(frozen=True)
class TaskSpec:
    """One task; see the module docstring.

    Data and training:
    - `reads`: the data set kinds it trains and scores on ("detect", "classify").
    - `adapt(dataset) -> dataset`: the data set as this task reads it (multilabel: the set of
      classes of each image).
    - `model_task`: the `task` of the registry models it trains (multilabel trains any
      classifier); `default_augment`: the augmentation preset (None: the model's own).
    - `whole_image`: a classifier that sees the whole image resized to a square, in training
      and at inference (no crop may cut a labelled object out).
    - `targets(targets, device)`: a batch's targets as the model (boxes) or `loss` (scores)
      takes them.
    - `loss(logits, targets) -> {name: tensor}` for "scores" models.
    - `train_conf(config) -> float | None`: the score threshold the trained model records
      (`ModelInfo.conf`).
    - `sgd_lr(batch) -> float`: the learning rate of `--optimizer sgd` without `--lr`.

    Results:
    - `default_conf`: the score threshold when neither `--conf` nor the model gives one.
    - `activation(logits) -> scores` and `classes(scores, names, topk=, conf=) -> [ClassScore]`
      ("scores" models): what `detect` reports per image.

    Scores (`metrics` are higher-is-better names `--metric` and `--fail-under` take;
    `default_metric` picks best.pt; `columns` and `panels` are the per-epoch table and
    metrics.png). Detection and classification are scored by the eval engine's own COCO/VOC and
    top-k code; a task with `score` is scored per image: `image_row(prediction, target, mapping=,
    size=)` keeps what one image adds (small plain data, gathered across processes) and
    `score(rows, classes=, conf=) -> TaskScore` reduces them.
    """

    name: str
    description: str
    model_task: str
    output: str  # "boxes" | "scores"
    reads: tuple[str, ...]
    metrics: tuple[str, ...]
    default_metric: str
    targets: Callable[[Sequence[Any], Any], Any]
    columns: tuple[tuple[str, str], ...] = ()
    panels: dict[str, dict[str, str]] = field(default_factory=dict)
    default_augment: str | None = None
    whole_image: bool = False
    adapt: Callable[[Any], Any] = _same
    loss: Callable[[Any, Any], dict[str, Any]] | None = None
    train_conf: Callable[[Any], float | None] = _no_conf
    sgd_lr: Callable[[int], float] = _sgd_lr
    default_conf: float | None = None
    activation: Callable[[Any], Any] | None = None
    classes: Callable[..., list[Any]] | None = None
    image_row: Callable[..., Any] | None = None
    score: Callable[..., TaskScore] | None = None
    aliases: tuple[str, ...] = ()


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; `UnknownName` (exit 2) with the nearest names otherwise."""
    return registry.get("task", name)


def training_augment(
    task: TaskSpec, info: Any, augment: str | None = None
) -> tuple[str, int | None]:
    """(augmentation preset, output size or None) of the training transforms for a model with
    `info` (a `ModelInfo`): `augment`, else the task's preset, else the detector head's. A
    classifier takes a batch of one size; detectors resize inside, and frcnn's scale jitter
    works around their own size (None: no fixed output size)."""
    from visiontool.models.factory import head_of

    head = head_of(info)
    preset = (
        augment or task.default_augment or (head.default_augment if head is not None else "frcnn")
    )
    if task.output == "boxes" and preset == "frcnn":
        return preset, None
    return preset, int(info.input_size)


def task_names() -> list[str]:
    return registry.names("task")
