"""Metric functions against references: pycocotools (COCO), hand-computed cases (VOC, top-k)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from visiontool.metrics.classification import classification_metrics
from visiontool.metrics.coco import COCO_KEYS, evaluate_coco, results_from_arrays
from visiontool.metrics.confusion import detection_confusion
from visiontool.metrics.voc import evaluate_voc, voc_ap


def random_coco(seed: int, *, images: int = 60, classes: int = 6):
    """GT with crowd boxes, empty images, a class without GT; detections with tied scores,
    a class without detections, boxes near their GT and random ones."""
    rng = np.random.default_rng(seed)
    gt = {
        "images": [
            {"id": i + 10, "file_name": f"{i}.jpg", "width": 320, "height": 240}
            for i in range(images)
        ],
        "annotations": [],
        "categories": [{"id": 2 * k + 1, "name": f"c{k}"} for k in range(classes)],
    }
    rows = []
    for img in gt["images"]:
        n = 0 if rng.random() < 0.15 else int(rng.integers(1, 9))
        for _ in range(n):
            x, y = rng.uniform(0, 250), rng.uniform(0, 180)
            w, h = rng.uniform(2, 120), rng.uniform(2, 120)
            cat = 2 * int(rng.integers(0, classes - 1)) + 1  # last class: no ground truth
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(rng.random() < 0.08),
                }
            )
            for _ in range(int(rng.integers(0, 4))):
                jitter = rng.normal(0, 6, 4)
                dcat = cat if rng.random() < 0.8 else 2 * int(rng.integers(0, classes)) + 1
                rows.append(
                    (
                        img["id"],
                        x + jitter[0],
                        y + jitter[1],
                        w + abs(jitter[2]),
                        h + abs(jitter[3]),
                        dcat,
                    )
                )
        for _ in range(int(rng.integers(0, 30))):
            cat = 2 * int(rng.integers(0, classes)) + 1
            box = (*rng.uniform(0, [250, 180]), *rng.uniform(2, 100, 2))
            rows.append((img["id"], *box, cat))
    arr = np.asarray(rows, dtype=np.float64)
    arr = arr[arr[:, 5] != 3]  # class c1 gets no detections
    scores = np.round(rng.random(len(arr)), 1)  # many ties
    dets = results_from_arrays(arr[:, 0].astype(int), arr[:, 1:5], scores, arr[:, 5].astype(int))
    return gt, dets


def pycocotools_eval(gt, dets, iou_thresholds=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        results = [{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in dets]
        coco_dt = coco_gt.loadRes(copy.deepcopy(results)) if results else None
        if coco_dt is None:
            return None
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_stats_match_pycocotools(seed):
    gt, dets = random_coco(seed)
    ref = pycocotools_eval(gt, dets)
    ours = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(dets))
    assert [ours.stats[k] for k in COCO_KEYS] == pytest.approx(list(ref.stats), abs=1e-9)
    precision = ref.eval["precision"]
    for k in range(len(gt["categories"])):
        p = precision[:, :, k, 0, -1]
        expected = p[p > -1].mean() if (p > -1).any() else -1.0
        assert ours.class_ap(k) == pytest.approx(expected, abs=1e-9)
        p50 = p[0]
        expected50 = p50[p50 > -1].mean() if (p50 > -1).any() else -1.0
        assert ours.class_ap(k, iou=0.5) == pytest.approx(expected50, abs=1e-9)
    assert ours.class_ap(len(gt["categories"]) - 1) == -1.0  # no ground truth: undefined
    assert ours.class_ap(1) == 0.0  # ground truth but no detections


def test_coco_custom_iou_thresholds_match_pycocotools():
    gt, dets = random_coco(5)
    thresholds = [0.3, 0.5, 0.75]
    ref = pycocotools_eval(gt, dets, thresholds)
    ours = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(dets), iou_thresholds=thresholds)
    assert [ours.stats[k] for k in COCO_KEYS] == pytest.approx(list(ref.stats), abs=1e-9)


def test_coco_no_detections_scores_zero():
    gt, _ = random_coco(3)
    ours = evaluate_coco(gt, [])
    assert ours.stats["map"] == 0.0
    assert ours.stats["mar_100"] == 0.0


def test_voc_ap_hand_computed():
    # 3 positives; detections in score order: TP, FP, TP -> recall 1/3, 1/3, 2/3
    recall = np.array([1 / 3, 1 / 3, 2 / 3])
    precision = np.array([1.0, 0.5, 2 / 3])
    # all-point: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 after
    assert voc_ap(recall, precision) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))
    # 11-point: t=0..0.3 -> 1 (4 points), t=0.4..0.6 -> 2/3 (3 points), t>=0.7 -> 0
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx((4 + 3 * 2 / 3) / 11)


def test_evaluate_voc_difficult_and_duplicates():
    # image 1: two GT of class 0, the second difficult; image 2: one GT of class 0
    gt_image = np.array([1, 1, 2])
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    gt_labels = np.array([0, 0, 0])
    difficult = np.array([False, True, False])
    det_image = np.array([1, 1, 1, 2, 2])
    det_boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]], float
    )
    det_scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    det_labels = np.zeros(5, int)
    result = evaluate_voc(
        gt_image, gt_boxes, gt_labels, difficult,
        det_image, det_boxes, det_scores, det_labels, num_classes=2,
    )  # fmt: skip
    # order: TP (0.9), FP duplicate (0.8), ignored (difficult, 0.7), FP (0.6), TP (0.5)
    # npos = 2 -> recall .5 .5 .5 1 ; precision 1 .5 1/3 1/2
    recall, precision = result.curves[0]
    assert recall.tolist() == [0.5, 0.5, 0.5, 1.0]
    assert precision == pytest.approx([1.0, 0.5, 1 / 3, 0.5])
    assert result.ap[0] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert result.ap07[0] == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)
    assert result.ap[1] == -1.0  # class without ground truth is undefined
    assert result.map == pytest.approx(0.75)
    # F1 = 2 TP / (kept + npos): 0.9 -> 2/3, 0.8 -> 2/4, 0.6 -> 2/5, 0.5 -> 4/6 (ties 0.9)
    assert result.f1 == pytest.approx(2 / 3) and result.f1_conf == 0.9


def test_best_f1_keeps_ties_together_and_handles_no_detections():
    from visiontool.metrics.voc import best_f1

    scores = np.array([0.9, 0.7, 0.7, 0.3])
    tp = np.array([True, True, False, True])
    # thresholds: 0.9 -> 2/(1+3)=.5; 0.7 keeps both ties -> 4/(3+3)=.667; 0.3 -> 6/(4+3)=.857
    assert best_f1(scores, tp, 3) == (pytest.approx(6 / 7), 0.3)
    assert best_f1(scores[:3], tp[:3], 3) == (pytest.approx(4 / 6), 0.7)  # not 0.7's first half
    assert best_f1(np.array([]), np.array([], bool), 3) == (0.0, 0.0)


def test_detection_confusion_with_background():
    gt_image = np.array([1, 1])
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    gt_labels = np.array([0, 1])
    det_boxes = np.array(
        [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]], float
    )
    matrix = detection_confusion(
        gt_image, gt_boxes, gt_labels, np.zeros(2, bool),
        np.array([1, 1, 1, 1]), det_boxes, np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 1, 1]),
        num_classes=2, conf=0.25, iou=0.5,
    )  # fmt: skip
    expected = np.zeros((3, 3), int)
    expected[0, 0] = 1  # right class
    expected[1, 0] = 1  # class-1 object predicted as class 0
    expected[2, 1] = 1  # false positive on background
    assert matrix.tolist() == expected.tolist()


def test_classification_metrics_hand_computed():
    scores = np.array(
        [
            [0.7, 0.2, 0.1, 0.0, 0.0, 0.0],
            [0.1, 0.6, 0.3, 0.0, 0.0, 0.0],
            [0.5, 0.4, 0.1, 0.0, 0.0, 0.0],
            [0.0, 0.1, 0.2, 0.3, 0.15, 0.25],
        ]
    )
    labels = np.array([0, 1, 1, 0])
    result = classification_metrics(scores, labels)
    assert result.top1 == 0.5
    assert result.top5 == 0.75  # sample 3: class 0 ranks last of 6
    assert result.confusion[:2, :2].tolist() == [[1, 0], [1, 1]]
    assert result.precision[:2] == pytest.approx([0.5, 1.0])
    assert result.recall[:2] == pytest.approx([0.5, 0.5])
    assert result.f1[1] == pytest.approx(2 / 3)


def test_detection_confusion_matches_greedily_per_image_and_skips_ignored_ground_truth():
    """Highest IoU first within each image (a box shared by two objects goes to the closer
    one), images apart; a prediction on crowd/difficult ground truth is not counted."""
    gt_image = np.array([1, 1, 2, 2])
    gt_boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [0, 0, 10, 10], [50, 50, 90, 90]], float)
    gt_labels = np.array([0, 1, 0, 1])
    ignored = np.array([False, False, False, True])
    det_image = np.array([1, 2, 2, 3])
    det_boxes = np.array([[2, 0, 12, 10], [0, 0, 10, 10], [52, 50, 90, 90], [0, 0, 5, 5]], float)
    matrix = detection_confusion(
        gt_image, gt_boxes, gt_labels, ignored, det_image, det_boxes,
        np.ones(4), np.array([0, 1, 0, 1]), num_classes=2, conf=0.5, iou=0.5,
    )  # fmt: skip
    expected = np.zeros((3, 3), int)
    expected[1, 0] = 1  # image 1: the box is the class-1 object's (IoU 1), predicted as 0
    expected[0, 2] = 1  # image 1: the class-0 object is missed
    expected[0, 1] = 1  # image 2: class-0 object predicted as class 1
    expected[2, 1] = 1  # image 3 (no ground truth): a false positive; the crowd hit is not
    assert matrix.tolist() == expected.tolist()
