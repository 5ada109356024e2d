"""The original Faster R-CNN (`frcnn-vgg16`, head `frcnn-classic`): each of the paper's
settings, the anchors `anchors grid` shows, both RoI ops, an overfit batch, and a CLI round trip
whose checkpoint alone rebuilds the model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, box_iou

from visiontool import registry
from visiontool.errors import ConfigError
from visiontool.models import create_model
from visiontool.models.parts import probe
from visiontool.models.specs import InferenceSettings
from visiontool.models.twostage.classic import RoIMaxPool
from visiontool.ops.anchors import grid_anchors

LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small CPU models run faster on one thread than on a shared, oversubscribed machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def paper():
    """frcnn-vgg16 with every default: VGG-16 and FC 4096 (137M parameters), built once."""
    return create_model("frcnn-vgg16", num_classes=4).eval()


def light(**arch):
    """The same RPN and RoI settings on ResNet-18's layer3 (stride 16) at 128 px, with anchors
    and FC width scaled to the small images."""
    return create_model(
        "frcnn-vgg16", num_classes=4, backbone="resnet18", returned_layers=[3], imgsz=128,
        anchor_sizes=[32, 64, 128], arch={"fc": 256, **arch},
    )  # fmt: skip


def batch():
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 64.0, 120.0, 124.0]]),
         "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[30.0, 30.0, 100.0, 90.0]]), "labels": torch.tensor([2])},
    ]  # fmt: skip
    return images, targets


# --- the network ------------------------------------------------------------------------------


def test_listed_with_its_options(cli):
    models = cli("models", "--json")
    assert models.exit_code == 0, models.output
    (row,) = [r for r in json.loads(models.stdout) if r["name"] == "frcnn-vgg16"]
    assert row["task"] == "detect" and row["input_size"] == 800
    heads = cli("models", "--heads", "--json")
    assert heads.exit_code == 0, heads.output
    (head,) = [h for h in json.loads(heads.stdout)["heads"] if h["name"] == "frcnn-classic"]
    assert head["default_backbone"] == "vgg16" and head["fpn"] == "none"
    assert {"roi_op", "fc", "rpn_batch", "post_nms_test", "roi_bg_low", "box_nms"} <= set(
        head["arch_options"]
    )


def test_frcnn_vgg16_is_the_papers_network(paper):
    spec = registry.get("model", "frcnn-vgg16")
    assert spec.task == "detect" and spec.composes == "frcnn-classic" and spec.pretrained is None
    build = paper.model_info.build
    assert (build["head"], build["backbone"], build["fpn"]) == ("frcnn-classic", "vgg16", False)
    # VGG-16's 13 convs up to conv5_3 + ReLU, the last max-pool left out: 512 maps at stride 16
    (feature,) = probe(paper.backbone)
    assert (feature.channels, feature.stride) == (512, 16)
    trunk = list(paper.backbone.body.children())
    assert sum(isinstance(m, nn.Conv2d) for m in trunk) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in trunk) == 4 and isinstance(trunk[-1], nn.ReLU)
    # RPN head: 3x3 conv 512 + ReLU, sibling 1x1 convs: 9 objectness logits, 36 offsets
    head = paper.rpn.head
    conv = head.conv[0][0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (512, 512, (3, 3))
    assert head.cls_logits.out_channels == 9 and head.bbox_pred.out_channels == 36
    assert head.cls_logits.kernel_size == head.bbox_pred.kernel_size == (1, 1)
    # RoI max pooling 7x7 at 1/16, FC 4096 -> 4096, K+1 scores and class-specific offsets
    pool = paper.roi_heads.box_roi_pool
    assert isinstance(pool, RoIMaxPool) and (pool.output_size, pool.spatial_scale) == (7, 1 / 16)
    box_head = paper.roi_heads.box_head
    assert (box_head.fc6.in_features, box_head.fc6.out_features) == (512 * 7 * 7, 4096)
    assert (box_head.fc7.in_features, box_head.fc7.out_features) == (4096, 4096)
    predictor = paper.roi_heads.box_predictor
    assert predictor.cls_score.out_features == 4 and predictor.bbox_pred.out_features == 16
    assert 130e6 < sum(p.numel() for p in paper.parameters()) < 140e6
    # inference: per-class NMS at the reference code's 0.3 (0.7 is the RPN's); --iou overrides
    assert paper.roi_heads.nms_thresh == 0.3 and paper.rpn.nms_thresh == 0.7
    head_spec = registry.get("head", "frcnn-classic")
    head_spec.configure(paper, InferenceSettings(conf=0.3, iou=0.45))
    assert (paper.roi_heads.score_thresh, paper.roi_heads.nms_thresh) == (0.3, 0.45)
    head_spec.configure(paper, InferenceSettings(conf=0.05, iou=0.3))


def test_anchors_are_exactly_what_anchors_grid_shows(paper, cli, tmp_path):
    """9 anchors per position, 128/256/512 px x width/height 0.5, 1, 2, centred in the cells:
    the model's own generator (what `anchors check` reads) gives `anchors grid`'s anchors."""
    assert paper.rpn.anchor_generator.num_anchors_per_location() == [9]
    head = registry.get("head", "frcnn-classic")
    anchors, size = head.image_anchors(paper, (600, 1000))  # (H, W): resized to 480x800
    assert size == (480, 800)
    assert torch.equal(anchors, grid_anchors(size, 16, [8, 16, 32], [0.5, 1, 2]))
    shown = cli("anchors", "grid", "--size", "800x480", "--json", "--out", tmp_path / "grid")
    assert shown.exit_code == 0, shown.output
    grid = json.loads(shown.stdout)
    assert grid["per_location"] == 9 and grid["count"] == anchors.shape[0] == 30 * 50 * 9
    first_cell = anchors[:9]
    sides = (first_cell[:, 2:] - first_cell[:, :2]).tolist()
    shown_sides = [side for s in grid["shapes"] for side in (s["w"], s["h"])]
    assert shown_sides == pytest.approx([side for pair in sides for side in pair], abs=0.01)
    assert sorted(round(w * h) for w, h in sides) == sorted(
        [128**2] * 3 + [256**2] * 3 + [512**2] * 3
    )


# --- RPN training -----------------------------------------------------------------------------


def test_rpn_labels_by_iou_and_ignores_cross_boundary_anchors(paper):
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0], [400.0, 400.0, 500.0, 500.0],
                       [0.0, 0.0, 100.0, 100.0]])  # fmt: skip
    anchors = torch.tensor([
        [100.0, 100.0, 200.0, 200.0],  # IoU 1: positive
        [100.0, 100.0, 200.0, 240.0],  # IoU 0.71 > 0.7: positive
        [100.0, 100.0, 200.0, 260.0],  # IoU 0.62: ignored
        [100.0, 100.0, 200.0, 500.0],  # IoU 0.25 < 0.3: negative
        [250.0, 250.0, 350.0, 350.0],  # no overlap: negative
        [400.0, 400.0, 500.0, 560.0],  # IoU 0.62, but the best anchor of box 2: positive
        [-5.0, 0.0, 95.0, 100.0],  # IoU 0.9 with box 3 but crosses the border: ignored
        [0.0, 0.0, 100.0, 150.0],  # IoU 0.67: box 3's best anchor inside the image: positive
        [700.0, 100.0, 820.0, 200.0],  # crosses the right border (W = 800): ignored
    ])  # fmt: skip
    target = {"boxes": gt, "image_size": (600, 800)}
    labels, matched = paper.rpn.assign_targets_to_anchors([anchors], [target])
    assert labels[0].tolist() == [1, 1, -1, 0, 0, 1, -1, 1, -1]
    assert torch.equal(matched[0][[0, 5, 7]], gt[[0, 1, 2]])
    empty = {"boxes": torch.zeros(0, 4), "image_size": (600, 800)}
    labels, _ = paper.rpn.assign_targets_to_anchors([anchors], [empty])
    assert labels[0].tolist() == [0, 0, 0, 0, 0, 0, -1, 0, -1]


def test_rpn_samples_256_anchors_at_most_half_positive(paper):
    sampler = paper.rpn.fg_bg_sampler
    labels = torch.cat([torch.ones(1000), torch.zeros(5000), -torch.ones(3000)])
    positive, negative = sampler([labels])
    assert (int(positive[0].sum()), int(negative[0].sum())) == (128, 128)
    assert not ((positive[0] | negative[0]).bool() & (labels == -1)).any()
    few = torch.cat([torch.ones(10), torch.zeros(5000)])
    positive, negative = sampler([few])
    assert (int(positive[0].sum()), int(negative[0].sum())) == (10, 246)


# --- proposals --------------------------------------------------------------------------------


def disjoint_boxes(count: int, side: float = 20.0, per_row: int = 100) -> torch.Tensor:
    index = torch.arange(count, dtype=torch.float32)
    x, y = (index % per_row) * side, (index // per_row) * side
    return torch.stack([x, y, x + side, y + side], dim=1)


def proposals(rpn, boxes, scores, size=(2000, 2000), train=False):
    rpn.train(train)
    try:
        kept, _ = rpn.filter_proposals(boxes[None], scores[:, None], [size], [len(boxes)])
    finally:
        rpn.eval()
    return kept[0]


def test_proposals_take_the_top_n_before_nms_and_keep_2000_or_300(paper):
    rpn = paper.rpn
    distinct = disjoint_boxes(4000)  # no two overlap: NMS keeps them all
    low = torch.rand(4000)
    assert len(proposals(rpn, distinct, low, train=True)) == 2000
    assert len(proposals(rpn, distinct, low, train=False)) == 300
    # 8000 copies of one box outscore the rest: at test time the top 6000 are all copies, so
    # NMS leaves one box; in training the top 12000 reach the distinct boxes as well
    copies = torch.tensor([[500.0, 500.0, 600.0, 600.0]]).repeat(8000, 1)
    boxes = torch.cat([copies, distinct + 2100])
    scores = torch.cat([10 + torch.rand(8000), low])
    size = (4200, 4200)
    assert len(proposals(rpn, boxes, scores, size, train=False)) == 1
    assert len(proposals(rpn, boxes, scores, size, train=True)) == 2000


def test_proposals_are_clipped_and_those_under_16_px_dropped(paper):
    boxes = torch.tensor([
        [0.0, 0.0, 15.0, 40.0],  # 15 px wide: dropped
        [0.0, 0.0, 40.0, 15.9],  # under 16 px tall: dropped
        [50.0, 50.0, 66.0, 66.0],  # 16 x 16: kept
        [-50.0, -50.0, 30.0, 30.0],  # clipped to 30 x 30: kept
        [790.0, 100.0, 900.0, 300.0],  # clipped to 10 px wide: dropped
    ])  # fmt: skip
    kept = proposals(paper.rpn, boxes, torch.rand(5), size=(600, 800))
    assert sorted(kept.tolist()) == [[0.0, 0.0, 30.0, 30.0], [50.0, 50.0, 66.0, 66.0]]


# --- RoI sampling -----------------------------------------------------------------------------


def strips(ious: list[float]) -> torch.Tensor:
    """Boxes [0, 0, 100, 100 * iou]: IoU `iou` with the box [0, 0, 100, 100]."""
    return torch.tensor([[0.0, 0.0, 100.0, 100.0 * iou] for iou in ious])


def test_background_rois_have_iou_from_01_to_05(paper):
    heads = paper.roi_heads
    gt, gt_labels = torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([2])
    _, labels = heads.assign_targets_to_proposals([strips([0.05, 0.2, 0.6])], [gt], [gt_labels])
    assert labels[0].tolist() == [-1, 0, 2]  # IoU 0.05 ignored, 0.2 background, 0.6 class 2
    target = {"boxes": gt, "labels": gt_labels}
    for _ in range(5):  # an IoU-0.05 RoI is never sampled; the gt box and the IoU-0.2 one are
        sampled, _, labels, _ = heads.select_training_samples([strips([0.05, 0.2])], [target])
        assert sorted(box_iou(gt, sampled[0])[0].tolist()) == pytest.approx([0.2, 1.0])
        assert sorted(labels[0].tolist()) == [0, 2]


def test_rois_sampled_128_per_image_a_quarter_foreground(paper):
    heads = paper.roi_heads
    gt, gt_labels = torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([1])
    ious = torch.linspace(0.01, 0.99, 980).tolist()  # 490 foreground, 400 background, 90 low
    target = {"boxes": gt, "labels": gt_labels}
    sampled, _, labels, targets = heads.select_training_samples([strips(ious)], [target])
    iou = box_iou(gt, sampled[0])[0]
    assert len(sampled[0]) == len(labels[0]) == len(targets[0]) == 128
    assert int((labels[0] > 0).sum()) == 32 and bool((iou[labels[0] > 0] >= 0.5).all())
    background = iou[labels[0] == 0]
    assert len(background) == 96 and bool(((background >= 0.1) & (background < 0.5)).all())


# --- training and options ---------------------------------------------------------------------


@pytest.mark.parametrize("roi_op", ["pool", "align"])
def test_both_roi_ops_train_and_detect(roi_op):
    torch.manual_seed(0)
    model = light(roi_op=roi_op)
    pool = model.roi_heads.box_roi_pool
    assert isinstance(pool, RoIMaxPool if roi_op == "pool" else MultiScaleRoIAlign)
    assert model.model_info.build["arch"] == {"fc": 256, "roi_op": roi_op}
    model.train()
    losses = model(*batch())
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # `train --amp` on CPU
        amp_losses = model(*batch())
    assert all(torch.isfinite(v) for v in amp_losses.values())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 150)])
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_small_images_with_every_anchor_across_the_border_train_without_nan():
    """At 64 px no 128-512 px anchor lies inside: the RPN samples none and its loss is 0."""
    model = create_model("frcnn-vgg16", num_classes=4, backbone="resnet18", returned_layers=[3],
                         imgsz=64, arch={"fc": 64})  # fmt: skip
    model.train()
    images, targets = batch()
    losses = model(
        [i[:, :64, :64] for i in images], [{**t, "boxes": t["boxes"] / 2} for t in targets]
    )
    assert losses["loss_objectness"].item() == losses["loss_rpn_box_reg"].item() == 0.0
    assert all(torch.isfinite(v) for v in losses.values())


def test_options_are_checked():
    with pytest.raises(ConfigError, match="roi_op must be pool or align"):
        light(roi_op="warp")
    with pytest.raises(ConfigError, match="roi_bg_low must be in"):
        light(roi_bg_low=0.6)
    with pytest.raises(ConfigError, match="post_nms_test must be a whole number"):
        light(post_nms_test=0.5)
    with pytest.raises(ConfigError, match="its --arch options: roi_op, fc"):
        light(width=3)
    with pytest.raises(ConfigError, match="--arch fc=N"):
        create_model("frcnn-vgg16", num_classes=3, backbone="resnet18", box_head=256)
    with pytest.raises(ConfigError, match="one feature map"):
        create_model("frcnn-vgg16", num_classes=3, backbone="resnet18", returned_layers=[2, 3])


def test_options_set_the_settings():
    model = light(rpn_batch=64, rpn_pos_fraction=0.25, post_nms_test=50, min_proposal=8,
                  roi_batch=32, roi_fg_fraction=0.5, roi_bg_low=0.0, box_nms=0.5)  # fmt: skip
    model.eval()
    rpn = model.rpn
    assert (rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == (
        64,
        0.25,
    )
    assert rpn.post_nms_top_n() == 50 and rpn.min_size == 8.0
    sampler = model.roi_heads.fg_bg_sampler
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (32, 0.5)
    assert model.roi_heads.bg_low == 0.0 and model.roi_heads.nms_thresh == 0.5


@pytest.mark.slow
def test_one_batch_overfits():
    torch.manual_seed(0)
    model = light()
    images, targets = batch()
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(40):
        loss = sum(model(images, targets).values())
        history.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sum(history[-5:]) / 5 < 0.15 * history[0], history
    model.eval()
    with torch.no_grad():
        out = model(images)
    for found, target in zip(out, targets, strict=True):
        confident = found["scores"] > 0.5
        assert set(found["labels"][confident].tolist()) == set(target["labels"].tolist())
        iou = box_iou(target["boxes"], found["boxes"][confident])
        assert bool((iou.max(dim=1).values > 0.5).all())


@pytest.mark.slow
def test_trains_from_the_cli_and_its_checkpoint_needs_only_weights(cli, tmp_path):
    """`train --model frcnn-vgg16` on a light stride-16 backbone, then detect, eval and anchors
    check with `--weights` alone: the checkpoint records the head, its options and anchors."""
    from visiontool.data.synth import synth_detection

    data = tmp_path / "shapes"
    synth_detection(data, n=8, imgsz=128, fmt="coco", seed=3)
    run = tmp_path / "run"
    result = cli("train", "--data", data, "--model", "frcnn-vgg16", "--backbone", "resnet18",
                 "--returned-layers", "3", "--arch", "fc=128,roi_op=align", "--anchor-sizes",
                 "16,32,64", "--imgsz", "128", "--epochs", "1", "--batch", "4", "--workers", "0",
                 "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    weights = run / "weights" / "best.pt"
    build = torch.load(weights, weights_only=True)["model_info"]["build"]
    assert (build["head"], build["backbone"], build["returned_layers"]) == (
        "frcnn-classic",
        "resnet18",
        [3],
    )
    assert build["arch"] == {"fc": 128, "roi_op": "align"} and build["anchor_sizes"] == [16, 32, 64]
    detected = cli("detect", data / "images" / "val", "--weights", weights, "--out",
                   tmp_path / "det", "--json")  # fmt: skip
    assert detected.exit_code == 0, detected.output
    evaluated = cli("eval", "--weights", weights, "--data", data, "--out", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    checked = cli("anchors", "check", "--weights", weights, "--data", data, "--json")
    assert checked.exit_code == 0, checked.output
    assert "frcnn-classic" in json.loads(checked.stdout)["generator"]
