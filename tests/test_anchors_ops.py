"""visiontool.ops.anchors: hand-computed cases from the formulas, round trips, references."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import batched_nms, box_iou, nms

from visiontool.ops.anchors import (
    anchor_shapes,
    assign_anchors,
    grid_anchors,
    inside_image,
    multibox_detection,
    multibox_prior,
    multibox_target,
    offset_inverse,
    rpn_labels,
)
from visiontool.ops.boxes import decode_boxes, encode_boxes, iou_with_box, wh_iou

T = torch.tensor


def close(a: torch.Tensor, b, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a.float(), torch.as_tensor(b).float(), atol=atol, rtol=0)


# ---------------------------------------------------------------------------- multibox_prior


def test_prior_one_size_one_ratio_tiles_the_image():
    anchors = multibox_prior(2, 2, [0.5], [1])
    assert anchors.shape == (1, 4, 4)
    close(
        anchors[0],
        [[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]],
    )


def test_prior_pair_order_and_shapes():
    # pairs (0.5, 1), (0.5, 4), (0.25, 1): widths 0.5, 1.0, 0.25; heights 0.5, 0.25, 0.25
    assert anchor_shapes([0.5, 0.25], [1, 4]) == [(0.5, 1.0), (0.5, 4.0), (0.25, 1.0)]
    anchors = multibox_prior(1, 1, [0.5, 0.25], [1, 4])
    close(
        anchors[0],
        [[0.25, 0.25, 0.75, 0.75], [0.0, 0.375, 1.0, 0.625], [0.375, 0.375, 0.625, 0.625]],
    )


def test_prior_order_is_sizes_with_first_ratio_after_all_ratios_of_first_size():
    pairs = anchor_shapes([3, 2, 1], [1, 2, 0.5])
    assert pairs == [(3, 1), (3, 2), (3, 0.5), (2, 1), (1, 1)]
    anchors = multibox_prior(1, 1, [0.3, 0.2, 0.1], [1, 2, 0.5])[0]
    wh = anchors[:, 2:] - anchors[:, :2]
    expected = [
        (s * math.sqrt(r), s / math.sqrt(r)) for s, r in anchor_shapes([0.3, 0.2, 0.1], [1, 2, 0.5])
    ]
    close(wh, expected)


def test_prior_row_major_centres_and_offset_zero():
    anchors = multibox_prior(2, 4, [0.1], [1], offset=0.0)[0]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    expected = [(x / 4, y / 2) for y in range(2) for x in range(4)]
    close(centres, expected)
    half = multibox_prior(2, 4, [0.1], [1])[0]
    close(
        (half[:, :2] + half[:, 2:]) / 2,
        [((x + 0.5) / 4, (y + 0.5) / 2) for y in range(2) for x in range(4)],
    )


def test_prior_accepts_feature_map_and_count():
    fmap = torch.zeros(2, 8, 3, 5)
    a = multibox_prior(fmap, [0.75, 0.5, 0.25], [1, 2, 0.5])
    b = multibox_prior(3, 5, sizes=[0.75, 0.5, 0.25], ratios=[1, 2, 0.5])
    assert a.shape == (1, 3 * 5 * 5, 4)
    close(a, b)
    c = multibox_prior(fmap, sizes=[0.5], ratios=[1], offset=0.0)
    close(c, multibox_prior(3, 5, [0.5], [1], 0.0))
    close(multibox_prior(fmap, [0.5], [1], 0.0), c)


def test_prior_rejects_bad_values():
    with pytest.raises(ValueError):
        multibox_prior(2, 2, [], [1])
    with pytest.raises(ValueError):
        multibox_prior(2, 2, [0.5], [-1])


# ---------------------------------------------------------------------------- boxes helpers


def test_iou_with_box_and_wh_iou_hand_values():
    boxes = T([[0.0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]])
    close(iou_with_box(boxes, T([0.0, 0, 2, 2])), [1.0, 1 / 7, 0.0])
    close(iou_with_box(boxes, T([0.0, 0, 2, 2])), box_iou(boxes, T([[0.0, 0, 2, 2]]))[:, 0])
    close(wh_iou(T([[2.0, 2.0], [4, 1]]), T([[2.0, 2.0], [1, 4]])), [[1, 2 / 6], [2 / 6, 1 / 7]])


def test_encode_hand_value_and_decode_round_trip():
    # anchor centre (0.25, 0.25) size 0.5; box centre (0.3, 0.3) size 0.4
    off = encode_boxes(T([[0.0, 0, 0.5, 0.5]]), T([[0.1, 0.1, 0.5, 0.5]]))
    w = math.log(1e-6 + 0.8) / 0.2
    close(off, [[1.0, 1.0, w, w]])
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 2, generator=g)
    anchors = torch.cat([a, a + 0.05 + torch.rand(50, 2, generator=g)], 1)
    b = torch.rand(50, 2, generator=g)
    boxes = torch.cat([b, b + 0.05 + torch.rand(50, 2, generator=g)], 1)
    close(decode_boxes(anchors, encode_boxes(anchors, boxes)), boxes)
    custom = {"means": (0.1, -0.2, 0.0, 0.3), "stds": (0.5, 0.5, 1.0, 1.0)}
    close(decode_boxes(anchors, encode_boxes(anchors, boxes, **custom), **custom), boxes)


# ---------------------------------------------------------------------------- assign_anchors


def reference_assign(gt: torch.Tensor, anchors: torch.Tensor, thr: float) -> torch.Tensor:
    """Straight from the description: full IoU matrix, greedy argmax, then the threshold."""
    iou = box_iou(anchors, gt)
    out = torch.full((len(anchors),), -1, dtype=torch.long)
    best, best_gt = iou.max(dim=1)
    work = iou.clone()
    for _ in range(min(len(anchors), len(gt))):
        flat = int(torch.argmax(work))
        a, g = divmod(flat, len(gt))
        out[a] = g
        work[a, :] = -1
        work[:, g] = -1
    extra = (out < 0) & (best >= thr)
    out[extra] = best_gt[extra]
    return out


def test_assign_hand_case_greedy_then_threshold():
    anchors = T([[0.0, 0, 1, 1], [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 0.6]])
    gt = T([[0.0, 0, 0.5, 0.5], [0, 0, 1, 0.5]])
    # IoU rows: a0 (0.25, 0.5), a1 (1, 0.5), a2 (0, 0), a3 (0.417, 0.833)
    # greedy: (a1, g0) = 1, then (a3, g1) = 0.833; a0 takes g1 by threshold (0.5 >= 0.5)
    assert assign_anchors(gt, anchors).tolist() == [1, 0, -1, 1]
    assert assign_anchors(gt, anchors, iou_threshold=0.6).tolist() == [-1, 0, -1, 1]
    assert assign_anchors(gt, anchors[None]).tolist() == [1, 0, -1, 1]


def test_assign_recomputes_a_box_whose_best_anchor_was_taken():
    anchors = T([[0.0, 0, 1, 1], [0, 0, 1, 0.8]])
    gt = T([[0.0, 0, 1, 1], [0, 0, 1, 0.9]])
    # both boxes prefer a0; g0 wins (IoU 1), g1 falls back to a1 (0.8 / 0.9)
    assert assign_anchors(gt, anchors, iou_threshold=0.95).tolist() == [0, 1]


def test_assign_gives_every_box_an_anchor_even_without_overlap():
    anchors = T([[0.0, 0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]])
    gt = T([[0.8, 0.8, 0.9, 0.9]])
    assert (assign_anchors(gt, anchors) >= 0).sum() == 1
    assert assign_anchors(torch.zeros(0, 4), anchors).tolist() == [-1, -1]


@pytest.mark.parametrize("seed", range(5))
def test_assign_matches_full_matrix_reference(seed):
    g = torch.Generator().manual_seed(seed)
    anchors = multibox_prior(6, 7, [0.4, 0.2], [1, 2, 0.5])[0]
    xy = torch.rand(9, 2, generator=g) * 0.7
    gt = torch.cat([xy, xy + 0.05 + torch.rand(9, 2, generator=g) * 0.25], 1)
    assert torch.equal(assign_anchors(gt, anchors, 0.4), reference_assign(gt, anchors, 0.4))


# ---------------------------------------------------------------------------- multibox_target


def test_target_hand_case_with_padding_and_batch():
    anchors = T([[0.0, 0, 0.5, 0.5], [0.6, 0.6, 1, 1], [0.5, 0, 1, 0.5]])
    labels = T(
        [
            [[2.0, 0.1, 0.1, 0.5, 0.5], [-1, -1, -1, -1, -1]],
            [[0.0, 0.6, 0.6, 1.0, 1.0], [1, 0.5, 0.0, 1.0, 0.45]],
        ]
    )
    offsets, mask, classes = multibox_target(anchors, labels)
    assert offsets.shape == (2, 12) and mask.shape == (2, 12) and classes.shape == (2, 3)
    w = math.log(1e-6 + 0.8) / 0.2
    close(offsets[0], [1, 1, w, w, 0, 0, 0, 0, 0, 0, 0, 0])
    close(mask[0], [1, 1, 1, 1] + [0] * 8)
    assert classes.tolist() == [[3, 0, 0], [0, 1, 2]]
    # anchor 2 vs box [0.5, 0, 1, 0.45]: centre shift 0 / -0.025, height 0.45 / 0.5
    h = math.log(1e-6 + 0.9) / 0.2
    close(offsets[1, 8:], [0.0, (-0.025 / 0.5) / 0.1, math.log(1 + 1e-6) / 0.2, h])
    close(mask[1], [0] * 4 + [1] * 8)


def test_target_known_d2l_example():
    # the worked example of the multibox formulation (dog and cat, five anchors)
    gt = T([[[0, 0.1, 0.08, 0.52, 0.92], [1, 0.55, 0.2, 0.9, 0.88]]])
    anchors = T(
        [
            [0, 0.1, 0.2, 0.3],
            [0.15, 0.2, 0.4, 0.4],
            [0.63, 0.05, 0.88, 0.98],
            [0.66, 0.45, 0.8, 0.8],
            [0.57, 0.3, 0.92, 0.9],
        ]
    )
    offsets, mask, classes = multibox_target(anchors, gt)
    assert classes.tolist() == [[0, 1, 2, 0, 2]]
    assert mask[0].tolist() == [0] * 4 + [1] * 8 + [0] * 4 + [1] * 4
    close(offsets[0, 4:8], [1.40, 10.0, 2.59, 7.18], atol=0.01)
    close(offsets[0, 16:], [-0.571, -1.0, 4.17e-6, 0.626], atol=0.01)


def test_offset_inverse_round_trip_and_shapes():
    g = torch.Generator().manual_seed(1)
    anchors = multibox_prior(3, 4, [0.5, 0.3], [1, 2])
    labels = T([[[0, 0.1, 0.2, 0.6, 0.7], [1, 0.4, 0.1, 0.9, 0.5]]])
    offsets, mask, classes = multibox_target(anchors, labels)
    boxes = offset_inverse(anchors, offsets[0])
    pos = classes[0] > 0
    assert pos.any()
    assignments = assign_anchors(labels[0, :, 1:], anchors)
    close(boxes[pos], labels[0, assignments[pos], 1:])
    rand = torch.randn(2, anchors.shape[1] * 4, generator=g)
    assert offset_inverse(anchors, rand).shape == (2, anchors.shape[1], 4)
    assert offset_inverse(anchors, rand.view(2, -1, 4)).shape == (2, anchors.shape[1], 4)
    # hand value: a shift of one std in x moves the centre by 0.1 anchor widths
    one = offset_inverse(T([[0.0, 0, 0.5, 0.5]]), T([[1.0, 0, 0, 0]]))
    close(one, [[0.05, 0.0, 0.55, 0.5]], atol=1e-5)


# ---------------------------------------------------------------------------- detection


def d2l_detection_inputs():
    anchors = T(
        [
            [0.1, 0.08, 0.52, 0.92],
            [0.08, 0.2, 0.56, 0.95],
            [0.15, 0.3, 0.62, 0.91],
            [0.55, 0.2, 0.9, 0.88],
        ]
    )
    probs = T([[0.0] * 4, [0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.9]])
    return anchors, probs[None], torch.zeros(1, 16)


def test_detection_hand_case_in_anchor_order():
    anchors, probs, offsets = d2l_detection_inputs()
    out = multibox_detection(probs, offsets, anchors, nms_threshold=0.5)
    assert out.shape == (1, 4, 6)
    # IoU(a0, a1) = 0.65, IoU(a0, a2) = 0.545: both dogs under a0 are suppressed
    assert out[0, :, 0].tolist() == [0, -1, -1, 1]
    close(out[0, :, 1], [0.9, 0.8, 0.7, 0.9])
    close(out[0, :, 2:], anchors, atol=1e-5)
    # per class, a0 (dog) and a3 (cat) do not interact either; a looser NMS keeps a2
    assert multibox_detection(probs, offsets, anchors, 0.6)[0, :, 0].tolist() == [0, -1, 0, 1]
    assert multibox_detection(probs, offsets, anchors, 0.5, class_agnostic=False)[
        0, :, 0
    ].tolist() == [0, -1, -1, 1]


def test_detection_threshold_background_and_class_agnostic_switch():
    anchors = T([[0.0, 0, 0.5, 0.5], [0.0, 0, 0.5, 0.55], [0.5, 0.5, 1, 1]])
    probs = T([[[0.1, 0.2, 0.6], [0.9, 0.0, 0.3], [0.0, 0.8, 0.1]]])
    out = multibox_detection(probs, torch.zeros(1, 12), anchors, 0.5)
    # anchor 1 (class 1) overlaps anchor 0 (class 0): suppressed across classes;
    # anchor 2: background 0.6 beats 0.3
    assert out[0, :, 0].tolist() == [0, -1, -1]
    out = multibox_detection(probs, torch.zeros(1, 12), anchors, 0.5, class_agnostic=False)
    assert out[0, :, 0].tolist() == [0, 1, -1]
    out = multibox_detection(probs, torch.zeros(1, 12), anchors, 0.5, pos_threshold=0.85)
    assert out[0, :, 0].tolist() == [0, -1, -1]


@pytest.mark.parametrize("agnostic", [True, False])
def test_detection_equals_torchvision_nms(agnostic):
    g = torch.Generator().manual_seed(3)
    anchors = multibox_prior(5, 5, [0.4, 0.3], [1, 2])[0]
    num = anchors.shape[0]
    probs = torch.softmax(torch.randn(2, 4, num, generator=g) * 3, dim=1)
    probs[:, 0] = 0  # no background, so every anchor is a candidate
    offsets = torch.randn(2, num * 4, generator=g) * 0.5
    out = multibox_detection(
        probs, offsets, anchors, 0.45, pos_threshold=0.0, class_agnostic=agnostic
    )
    for b in range(2):
        boxes = offset_inverse(anchors, offsets[b])
        conf, cls = probs[b, 1:].max(0)
        keep = nms(boxes, conf, 0.45) if agnostic else batched_nms(boxes, conf, cls, 0.45)
        expected = torch.full((num,), -1.0)
        expected[keep] = cls[keep].float()
        assert torch.equal(out[b, :, 0], expected)


# ---------------------------------------------------------------------------- grid / rpn


def test_grid_anchors_hand_case():
    anchors = grid_anchors((32, 48), 16, [1], [1])
    assert anchors.tolist() == [
        [0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16],
        [0, 16, 16, 32], [16, 16, 32, 32], [32, 16, 48, 32],
    ]  # fmt: skip
    shaped = grid_anchors((16, 16), 16, [1, 2], [0.25, 1])
    # cell centre (8, 8): (1, 0.25) 8x32, (1, 1) 16x16, (2, 0.25) 16x64, (2, 1) 32x32
    close(shaped, [[4, -8, 12, 24], [0, 0, 16, 16], [0, -24, 16, 40], [-8, -8, 24, 24]])
    assert grid_anchors((600, 1000), 16, [8, 16, 32], [0.5, 1, 2]).shape == (38 * 63 * 9, 4)


def test_inside_image():
    anchors = grid_anchors((32, 48), 16, [1, 2], [1])
    inside = inside_image(anchors, (32, 48))
    assert inside.tolist() == [True, False] * 6
    assert inside_image(anchors, (32, 48), border=8).all()


def test_rpn_labels_hand_case():
    anchors = T(
        [
            [0.0, 0, 10, 10],  # IoU 1 with g0 -> 1
            [0, 0, 10, 6],  # 0.6 -> ignored
            [20, 20, 30, 30],  # 0 -> 0
            [0, 0, 10, 8],  # 0.8 -> 1
            [40, 40, 50, 50],  # 0.25, tied best of g1 -> 1
            [50, 50, 60, 60],  # 0.25, tied best of g1 -> 1 (or ignored when crossing the border)
        ]
    )
    gt = T([[0.0, 0, 10, 10], [40, 40, 60, 60]])
    out = rpn_labels(anchors, gt, batch=100)
    assert out.full.tolist() == [1, -1, 0, 1, 1, 1]
    assert out.labels.tolist() == out.full.tolist()
    assert out.matched.tolist() == [0, 0, 0, 0, 1, 1]
    clipped = rpn_labels(anchors, gt, batch=100, image_size=(55, 55))
    assert clipped.full.tolist() == [1, -1, 0, 1, 1, -1]
    assert clipped.matched[5] == -1
    sampled = rpn_labels(
        anchors, gt, batch=2, pos_fraction=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert (sampled.labels == 1).sum() == 1 and (sampled.labels == 0).sum() == 1
    assert ((sampled.labels == 1) <= (out.full == 1)).all()


def test_rpn_labels_sampling_fills_with_negatives_and_no_boxes():
    anchors = grid_anchors((64, 64), 16, [1], [1])
    out = rpn_labels(anchors, T([[0.0, 0, 16, 16]]), batch=8, pos_fraction=0.5)
    assert (out.labels == 1).sum() == 1 and (out.labels == 0).sum() == 7
    empty = rpn_labels(anchors, torch.zeros(0, 4), batch=4)
    assert (empty.full == 0).all() and (empty.labels == 0).sum() == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ops_run_on_gpu():
    anchors = multibox_prior(torch.zeros(1, 1, 20, 30, device="cuda"), [0.5, 0.2], [1, 2])
    assert anchors.is_cuda
    labels = T([[[0, 0.1, 0.1, 0.5, 0.5]]], device="cuda")
    offsets, mask, classes = multibox_target(anchors, labels)
    cpu = multibox_target(anchors.cpu(), labels.cpu())
    close(offsets.cpu(), cpu[0])
    assert torch.equal(classes.cpu(), cpu[2])
