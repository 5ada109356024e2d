"""Adding a detection head is one module plus its tests: a head the engine has never seen.

`centers` below is a deliberately tiny, non-torchvision head (one 1x1 conv predicting, per
cell of the backbone's last map, class logits and a box). Everything it needs is in its
`HeadSpec`; the test registers it, then trains, detects, evaluates and checks anchors through
the CLI without any other change to the package. If the engine branched on head names, types or
torchvision attributes anywhere, one of these commands would fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from visiontool import registry
from visiontool.data.synth import synth_detection
from visiontool.models.compose import allowed_combinations
from visiontool.models.specs import HeadSpec, InferenceSettings

NAME = "centers"


class Centers(nn.Module):
    """Per cell: `num_classes` logits (0 = background) and a box (cx, cy, w, h in [0, 1] of the
    resized image). Training: the cell holding a box's centre learns its class and box."""

    def __init__(self, backbone: nn.Module, num_classes: int, size: int) -> None:
        super().__init__()
        self.backbone, self.num_classes, self.size = backbone, num_classes, size
        self.predict = nn.Conv2d(backbone.out_channels, num_classes + 4, kernel_size=1)
        self.score_thresh, self.detections_per_img = 0.05, 100

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> Any:
        sizes = [tuple(image.shape[-2:]) for image in images]
        batch = torch.stack([F.interpolate(i[None], size=(self.size,) * 2)[0] for i in images])
        features = self.backbone(batch)
        if isinstance(features, dict):
            features = list(features.values())[-1]
        out = self.predict(features)
        logits, boxes = out[:, : self.num_classes], out[:, self.num_classes :].sigmoid()
        if self.training:
            return self._losses(logits, boxes, targets or [], sizes)
        return [
            self._detect(lg, bx, size) for lg, bx, size in zip(logits, boxes, sizes, strict=True)
        ]

    def _losses(self, logits, boxes, targets, sizes) -> dict[str, torch.Tensor]:
        n, _, h, w = logits.shape
        labels = torch.zeros(n, h, w, dtype=torch.long)
        wanted = torch.zeros(n, 4, h, w)
        for k, (target, (height, width)) in enumerate(zip(targets, sizes, strict=True)):
            for box, label in zip(target["boxes"], target["labels"], strict=True):
                cx, cy = (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height
                i, j = min(int(cy * h), h - 1), min(int(cx * w), w - 1)
                labels[k, i, j] = label
                size = torch.stack([(box[2] - box[0]) / width, (box[3] - box[1]) / height])
                wanted[k, :, i, j] = torch.cat([torch.stack([cx, cy]), size])
        mask = (labels > 0).unsqueeze(1).expand_as(boxes)
        box_loss = F.l1_loss(boxes[mask], wanted[mask]) if mask.any() else boxes.sum() * 0
        return {"classification": F.cross_entropy(logits, labels), "box": box_loss}

    def _detect(self, logits, boxes, size) -> dict[str, torch.Tensor]:
        height, width = size
        probs = logits.softmax(0)[1:].flatten(1)  # (classes, cells)
        scores, labels = probs.max(0)
        cx, cy, bw, bh = boxes.flatten(1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        xyxy = xyxy * torch.tensor([width, height, width, height])
        keep = scores >= self.score_thresh
        order = scores[keep].argsort(descending=True)[: self.detections_per_img]
        return {"boxes": xyxy[keep][order], "scores": scores[keep][order],
                "labels": labels[keep][order] + 1}  # fmt: skip


def build(*, backbone: nn.Module, num_classes: int, size: int = 128, **_: Any) -> nn.Module:
    return Centers(backbone, num_classes, size)


def replace_class_layers(model: Centers, num_classes: int) -> list[str]:
    model.num_classes = num_classes
    model.predict = nn.Conv2d(model.predict.in_channels, num_classes + 4, kernel_size=1)
    return ["predict.weight", "predict.bias"]


def configure(model: Centers, settings: InferenceSettings) -> None:
    model.score_thresh = settings.conf
    if settings.max_det is not None:
        model.detections_per_img = settings.max_det


def set_input_size(model: Centers, imgsz: int) -> None:
    model.size = imgsz


def image_anchors(model: Centers, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """One square 'anchor' per cell of the last map (what its box regression starts from)."""
    cells = max(1, model.size // 32)
    step = model.size / cells
    centres = (torch.arange(cells) + 0.5) * step
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    half = step / 2
    anchors = torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)
    return anchors, (model.size, model.size)


SPEC = HeadSpec(
    name=NAME,
    build=build,
    replace_class_layers=replace_class_layers,
    configure=configure,
    set_input_size=set_input_size,
    preresize=lambda model, image: (image, (1.0, 1.0)),
    image_anchors=image_anchors,
    fpn=False,
    layers="ssd",
    default_backbone="mobilenet_v3_small",
    default_imgsz=128,
    default_augment="none",
    fixed_size=True,
    description="test-only: one box per cell of the last map",
)


@pytest.fixture(scope="module", autouse=True)
def registered():
    registry.add("head", SPEC)
    yield
    registry.remove("head", NAME)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=8, imgsz=96, fmt="coco", seed=5)
    return out


def test_the_new_head_is_a_registered_part():
    assert registry.get("head", NAME) is SPEC
    assert (NAME, "mobilenet_v3_small", False) in allowed_combinations()
    assert (NAME, "mobilenet_v3_small", True) not in allowed_combinations()


@pytest.mark.slow
def test_train_detect_eval_and_anchors_work_with_no_engine_change(cli, shapes, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--data", shapes, "--head", NAME, "--epochs", "1", "--batch", "4",
                 "--workers", "0", "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    best = run / "weights" / "best.pt"
    build = torch.load(best, weights_only=True)["model_info"]["build"]
    assert build["head"] == NAME and build["backbone"] == "mobilenet_v3_small"
    args = json.loads((run / "args.json").read_text())
    assert args["head"] == NAME

    pred = tmp_path / "pred"
    result = cli("detect", shapes / "images" / "val", "--weights", best, "--conf", "0",
                 "--max-det", "3", "--workers", "0", "--out", pred)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (pred / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(0 < len(row["detections"]) <= 3 for row in rows)  # configure() applied
    labels = {d["label"] for row in rows for d in row["detections"]}
    assert labels <= {"circle", "square", "triangle", "star", "cross", "ring"}

    result = cli("eval", "--weights", best, "--data", shapes, "--workers", "0", "--json",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.stdout.splitlines()[0])["map50"] <= 1.0

    # anchor checks ask the head spec too (the CLI names registry models; a head is not one)
    from functools import partial

    from visiontool.data.datasets import open_dataset
    from visiontool.engine.anchors.check import check_records
    from visiontool.models.factory import load_model

    loaded = load_model(weights=best)
    assert loaded.head is SPEC
    records = open_dataset(shapes, split="val").records()
    report = check_records(partial(SPEC.image_anchors, loaded.module), records)
    assert report.boxes > 0 and 0.0 <= report.overall.recall_50 <= 1.0
