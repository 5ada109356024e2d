"""Typed specs: what the engine may know about a model, a head or a backbone.

A spec is the whole story of one registry name. The engine asks it (how to build, which
defaults, how to swap class layers, how to configure inference) and never branches on a name,
a class or a "source" string. Specs are plain frozen dataclasses whose behaviour fields are
functions, so this module imports without torch and `visiontool models` lists everything fast.

Adding a detection head is one module in `visiontool/models/heads/` that builds a `HeadSpec`
and calls `registry.add("head", spec)`; adding a model is one module that registers a
`ModelSpec` (see docs/models.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pathlib import Path

    from visiontool.models.info import ModelInfo

Module = Any  # torch.nn.Module, kept loose so this module imports without torch


@dataclass(frozen=True)
class InferenceSettings:
    """Post-processing a user may set at inference: score threshold, NMS IoU, max boxes."""

    conf: float = 0.25
    iou: float | None = None
    max_det: int | None = None


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: a classifier trunk cut into a feature extractor.

    `build(*, weights, trainable_layers, fpn, returned_layers, extra_blocks, frozen_bn,
    fpn_channels)` returns a module with `out_channels` and `stages`. `layers` maps a layout
    preset (a head's `layers`) to the default returned stages.
    """

    name: str
    build: Callable[..., Module]
    layers: dict[str, tuple[int, ...]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str = "none"  # label of the ImageNet weights `--backbone-weights DEFAULT` loads
    fpn: bool = True  # can build an FPN (several stages); False: one map only
    family: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeadSpec:
    """A detection head family built over any compatible backbone.

    Layout: `fpn` True (needs an FPN), False (builds its own multi-scale maps from a plain
    backbone) or None (either); `layers` names the backbone's returned-stages preset;
    `extra_blocks` the FPN's extra level ("pool" or "p6p7"); `backbones` limits the pairs (empty:
    any). Training defaults: `default_backbone`, `default_imgsz`, `default_augment`.
    `fixed_size`: the input is resized to a fixed square (SSD) rather than by its short side.
    `arch_options`: extra architecture arguments `build` accepts (e.g. Faster R-CNN's box head
    width), recorded in checkpoints.

    Behaviour (functions of the built model):
    - `build(*, backbone, num_classes, anchor_sizes, anchor_ratios, image_mean, image_std,
      min_size, max_size, size, **arch_options)`: the detector; `num_classes` counts the
      background at index 0.
    - `replace_class_layers(model, num_classes) -> [param names]`: fresh class-dependent layers
      for fine-tuning on new classes; the returned names learn at `--head-lr-mult`.
    - `configure(model, settings)`: push score threshold / NMS IoU / max detections inside.
    - `set_input_size(model, imgsz)`: change the size the model resizes inputs to.
    - `preresize(model, image) -> (image, (sx, sy))`: resize a float (3, H, W) image the way
      the model would, before normalising (faster; boxes are scaled back by (sx, sy)).
    - `image_anchors(model, (H, W)) -> (anchors (A, 4), (h, w))`: the anchors the model lays
      over an image of that size, in its input coordinates; None when the head has none.
    - `anchor_levels(sizes, ratios, strides)`: check and complete anchor options for a backbone
      whose maps have `strides` (what `anchors fit` files and --anchor-sizes feed).
    """

    name: str
    build: Callable[..., Module]
    replace_class_layers: Callable[[Module, int], list[str]]
    configure: Callable[[Module, InferenceSettings], None]
    set_input_size: Callable[[Module, int], None]
    preresize: Callable[[Module, Any], tuple[Any, tuple[float, float]]]
    fpn: bool | None = None
    layers: str = "fpn"
    extra_blocks: str = "pool"
    backbones: tuple[str, ...] = ()
    default_backbone: str = "resnet18"
    default_imgsz: int = 512
    default_augment: str = "frcnn"
    fixed_size: bool = False
    arch_options: tuple[str, ...] = ()
    image_anchors: Callable[[Module, tuple[int, int]], tuple[Any, tuple[int, int]]] | None = None
    anchor_free: bool = False
    description: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name: `create_model(name, ...)` builds it from this.

    - `build(*, num_classes=None, **arch)`: the architecture with random weights (never
      downloads). `num_classes=None` keeps the default weights' label space.
    - `pretrained()`: the default weights as (module, ModelInfo) (downloads torchvision weights
      once; reads a shipped checkpoint); None when the model has no default weights.
    - `info(weights_label)`: the ModelInfo of the default label space; None when the classes
      come from the data set (models trained per data set).
    - `replace_class_layers(model, num_classes) -> [param names]` (fine-tuning).
    - `head`: the detection head family of a detector (its `HeadSpec` configures inference);
      None for classifiers.
    - `composes`: a recipe name: the head it composes over `--backbone` (the head's default
      backbone otherwise) for the data set's classes; `train --model NAME` is `train --head
      HEAD` under a name users know from the papers.
    `source` says where the weights come from ("torchvision", "visiontool", "shipped"); it is
    for listing and reports only: behaviour lives in the functions above.
    """

    name: str
    task: str  # "detect" | "classify"
    build: Callable[..., Module]
    replace_class_layers: Callable[[Module, int], list[str]]
    pretrained: Callable[[], tuple[Module, ModelInfo]] | None = None
    info: Callable[[str], ModelInfo] | None = None
    head: str | None = None
    source: str = "visiontool"
    dataset: str = "custom"  # what the default weights were trained on
    input_size: int | None = None
    weights: str = "none"  # label of the default weights
    checkpoint: Callable[[], Path] | None = None  # shipped models: the verified file
    preprocess: dict[str, Any] = field(default_factory=dict)
    hidden: bool = False  # rebuild-only entries (checkpoints name them), not listed
    composes: str | None = None  # recipes: the head `train --model NAME` composes
    description: str = ""
    aliases: tuple[str, ...] = ()
