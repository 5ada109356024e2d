"""The original Faster R-CNN (Ren et al., NeurIPS 2015) over one stride-16 map, no FPN: the
recipe model `frcnn-vgg16` is this head over VGG-16's conv layers up to conv5_3 (the last
max-pool left out: 512 channels at stride 16).

Built from torchvision's FasterRCNN parts (`GeneralizedRCNN`, `RPNHead`, `TwoMLPHead`,
`FastRCNNPredictor`, the transform) and the small subclasses in
`visiontool.models.twostage.classic` for what torchvision does differently. The paper's
settings are the defaults; each is an `--arch KEY=VALUE` option, recorded in checkpoints:

| option | default | meaning |
|---|---|---|
| `roi_op` | `pool` | RoI max pooling 7x7 at the map's scale (`align`: RoIAlign, sampling 2) |
| `fc` | 4096 | width of the two fully connected layers of the box head (fc6, fc7) |
| `rpn_fg_iou` | 0.7 | an anchor is positive at IoU >= this with some box (or is a box's best) |
| `rpn_bg_iou` | 0.3 | negative below this with every box; in between ignored |
| `rpn_batch` | 256 | anchors sampled per image for the RPN loss |
| `rpn_pos_fraction` | 0.5 | at most this fraction of them positive (negatives fill the rest) |
| `pre_nms_train` / `pre_nms_test` | 12000 / 6000 | proposals kept by objectness before NMS |
| `post_nms_train` / `post_nms_test` | 2000 / 300 | proposals kept after NMS |
| `rpn_nms` | 0.7 | NMS IoU between proposals |
| `min_proposal` | 16 | proposals narrower or shorter than this (input pixels) are dropped |
| `roi_batch` | 128 | RoIs sampled per image for the head's loss |
| `roi_fg_fraction` | 0.25 | at most this fraction of them foreground |
| `roi_fg_iou` | 0.5 | a RoI is foreground at IoU >= this (and background below it) |
| `roi_bg_low` | 0.1 | ... background only from this IoU up; lower RoIs are never sampled |
| `box_nms` | 0.3 | per-class NMS IoU of the detections (`--iou` overrides at inference) |

The detections' NMS is the reference code's (py-faster-rcnn `TEST.NMS = 0.3`, Fast R-CNN's
per-class NMS); 0.7 is the RPN's, between proposals. At 0.7 on shapes, duplicates of one object
survive: held-out mAP50 0.631 with 0.7, 0.887 with 0.3, same weights (benchmarks/RESULTS.md).

Anchors: 9 per position, sizes 128, 256, 512 px (8, 16, 32 x stride 16) x ratios 0.5, 1, 2,
centred in each cell (`--anchor-sizes`/`--anchor-ratios`/`--anchors` change them). The RPN
head is torchvision's: a 3x3 conv as wide as the map (512 on VGG-16) + ReLU, then sibling 1x1
convs for one objectness logit (binary cross-entropy: the paper's two-way softmax, one logit
fewer) and 4 offsets per anchor. Loss: cross-entropy + smooth L1 (beta 1) in both stages,
trained jointly end to end. `--box-head` does not apply (use `--arch fc=N`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models.heads import torchvision_parts as tv
from visiontool.models.heads.anchors import Levels
from visiontool.models.specs import HeadSpec

PAPER_SIZES = (128.0, 256.0, 512.0)  # 8, 16, 32 x stride 16
PAPER_RATIOS = (2.0, 1.0, 0.5)  # height / width: width / height 0.5, 1, 2 as `anchors grid`
OPTIONS = {
    "roi_op": "pool",
    "fc": 4096,
    "rpn_fg_iou": 0.7,
    "rpn_bg_iou": 0.3,
    "rpn_batch": 256,
    "rpn_pos_fraction": 0.5,
    "pre_nms_train": 12000,
    "pre_nms_test": 6000,
    "post_nms_train": 2000,
    "post_nms_test": 300,
    "rpn_nms": 0.7,
    "min_proposal": 16.0,
    "roi_batch": 128,
    "roi_fg_fraction": 0.25,
    "roi_fg_iou": 0.5,
    "roi_bg_low": 0.1,
    "box_nms": 0.3,
}
DEFAULT_BOX_HEAD = 1024  # `build_detector`'s --box-head default, which this head does not use


def default_sizes(strides: Sequence[int]) -> Levels:
    """The paper's three sizes on the one map, whatever its stride."""
    return (PAPER_SIZES,) * len(strides)


def build(
    *,
    backbone: Any,
    num_classes: int,
    anchor_sizes: Any = None,
    anchor_ratios: Any = None,
    anchor_fit: dict[str, Any] | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    box_head: int = DEFAULT_BOX_HEAD,
    size: Any = None,
    **arch: Any,
) -> Any:
    """The detector over `backbone`'s one map; `arch` holds the options of the module
    docstring (the paper's values where absent). `size` (fixed-square heads) is unused: the
    image is resized by `min_size`/`max_size`."""
    import torch
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import MultiScaleRoIAlign

    from visiontool.models.parts import probe
    from visiontool.models.twostage.classic import (
        CellCentredAnchors,
        ClassicRoIHeads,
        ClassicRPN,
        RoIMaxPool,
    )

    if box_head != DEFAULT_BOX_HEAD:
        raise ConfigError("frcnn-classic sets its box-head width with --arch fc=N (4096)")
    o = options(arch)
    maps = probe(backbone)
    if len(maps) != 1:
        raise ConfigError(
            f"frcnn-classic works on one feature map (the paper's conv5_3, stride 16), the "
            f"backbone gives {len(maps)}: pass one --returned-layers value"
        )
    (feature,) = maps
    ratios = anchor_ratios if anchor_ratios is not None else [PAPER_RATIOS]
    anchors, _ = tv.grid_generator(
        backbone, "frcnn-classic", anchor_sizes, ratios, default_sizes, False, anchor_fit,
        generator=CellCentredAnchors, maps=maps,
    )  # fmt: skip
    if o["roi_op"] == "pool":
        roi = RoIMaxPool(feature.name, 7, feature.stride)
    else:
        roi = MultiScaleRoIAlign(featmap_names=[feature.name], output_size=7, sampling_ratio=2)
    fc = int(o["fc"])
    predictor = FastRCNNPredictor(fc, num_classes)
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        torch.nn.init.normal_(layer.weight, std=std)  # Fast R-CNN's initialisation
        torch.nn.init.zeros_(layer.bias)
    rpn = ClassicRPN(
        anchors,
        RPNHead(feature.channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=float(o["rpn_fg_iou"]),
        bg_iou_thresh=float(o["rpn_bg_iou"]),
        batch_size_per_image=int(o["rpn_batch"]),
        positive_fraction=float(o["rpn_pos_fraction"]),
        pre_nms_top_n={"training": int(o["pre_nms_train"]), "testing": int(o["pre_nms_test"])},
        post_nms_top_n={"training": int(o["post_nms_train"]), "testing": int(o["post_nms_test"])},
        nms_thresh=float(o["rpn_nms"]),
        min_size=float(o["min_proposal"]),
    )
    roi_heads = ClassicRoIHeads(
        roi,
        TwoMLPHead(feature.channels * 7 * 7, fc),
        predictor,
        fg_iou_thresh=float(o["roi_fg_iou"]),
        bg_iou_thresh=float(o["roi_fg_iou"]),
        batch_size_per_image=int(o["roi_batch"]),
        positive_fraction=float(o["roi_fg_fraction"]),
        bbox_reg_weights=None,  # (10, 10, 5, 5): Fast R-CNN's target normalisation
        score_thresh=0.05,
        nms_thresh=float(o["box_nms"]),
        detections_per_img=100,
        bg_low=float(o["roi_bg_low"]),
    )
    args = tv.transform_args(min_size, max_size, image_mean, image_std)
    transform = GeneralizedRCNNTransform(
        args["min_size"], args["max_size"],
        args["image_mean"] or [0.485, 0.456, 0.406], args["image_std"] or [0.229, 0.224, 0.225],
    )  # fmt: skip
    return GeneralizedRCNN(backbone, rpn, roi_heads, transform)


def options(arch: dict[str, Any]) -> dict[str, Any]:
    """The paper's settings overridden by `arch`, each checked."""
    o = {**OPTIONS, **arch}
    if o["roi_op"] not in ("pool", "align"):
        raise ConfigError(f"frcnn-classic roi_op must be pool or align, got {o['roi_op']!r}")
    for key in ("rpn_fg_iou", "rpn_bg_iou", "rpn_pos_fraction", "rpn_nms", "roi_fg_fraction",
                "roi_fg_iou", "box_nms"):  # fmt: skip
        if not _number(o[key]) or not 0.0 < float(o[key]) <= 1.0:
            raise ConfigError(f"frcnn-classic {key} must be in (0, 1], got {o[key]!r}")
    if not _number(o["roi_bg_low"]) or not 0.0 <= float(o["roi_bg_low"]) < float(o["roi_fg_iou"]):
        raise ConfigError(
            f"frcnn-classic roi_bg_low must be in [0, roi_fg_iou), got {o['roi_bg_low']!r}"
        )
    if float(o["rpn_bg_iou"]) > float(o["rpn_fg_iou"]):
        raise ConfigError("frcnn-classic rpn_bg_iou must not exceed rpn_fg_iou")
    for key in ("fc", "rpn_batch", "pre_nms_train", "pre_nms_test", "post_nms_train",
                "post_nms_test", "roi_batch"):  # fmt: skip
        if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] < 1:
            raise ConfigError(f"frcnn-classic {key} must be a whole number >= 1, got {o[key]!r}")
    if not _number(o["min_proposal"]) or float(o["min_proposal"]) < 0:
        raise ConfigError(
            f"frcnn-classic min_proposal must be >= 0 pixels, got {o['min_proposal']!r}"
        )
    return o


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


SPEC = registry.add(
    "head",
    HeadSpec(
        name="frcnn-classic",
        build=build,
        **tv.TWO_STAGE,
        fpn=False,
        layers="last",
        default_backbone="vgg16",
        default_imgsz=800,
        default_augment="frcnn",
        arch_options=tuple(OPTIONS),
        description="Faster R-CNN (2015 paper): one stride-16 map, RoI pool, FC 4096",
    ),
)
