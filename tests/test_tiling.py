"""Sliced inference (`detect --tile`): tile layout, merging duplicates across tile borders
(nms by intersection over the smaller box, weighted box fusion), and a 4000x3000 image whose
small shapes the shipped model misses whole and finds in tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from visiontool.engine.predict.tiling import (
    intersection_over_smaller,
    merge_detections,
    tile_starts,
    tile_windows,
)


def test_tiles_overlap_and_the_last_one_meets_the_edge():
    assert tile_starts(1000, 256, 0.2) == [0, 204, 408, 612, 744]
    assert tile_starts(256, 256, 0.2) == [0] and tile_starts(100, 256, 0.2) == [0]
    windows = tile_windows(600, 300, 256, 0.0)
    assert windows == [(0, 0), (256, 0), (344, 0), (0, 44), (256, 44), (344, 44)]
    covered = np.zeros((300, 600), bool)
    for x, y in windows:
        covered[y : y + 256, x : x + 256] = True
    assert covered.all()


def test_a_box_cut_by_a_tile_edge_merges_into_the_whole_one():
    whole = torch.tensor([[100.0, 100, 140, 140]])
    cut = torch.tensor([[100.0, 100, 120, 140]])  # half of it, seen by the next tile
    other = torch.tensor([[300.0, 300, 340, 340]])
    boxes = torch.cat([cut, whole, other, whole])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1, 2])  # the last: another class at the same place
    assert float(intersection_over_smaller(cut, whole)[0, 0]) == pytest.approx(1.0)
    assert float(box_iou(cut, whole)[0, 0]) == pytest.approx(0.5)  # plain IoU: ambiguous
    kept_boxes, kept_scores, kept_labels = merge_detections(boxes, scores, labels)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert kept_labels.tolist() == [1, 1, 2]
    assert torch.equal(kept_boxes[0], whole[0])

    fused, fused_scores, _ = merge_detections(boxes, scores, labels, method="wbf")
    expected = (whole[0] * 0.9 + cut[0] * 0.6) / 1.5  # score-weighted mean
    assert torch.allclose(fused[0], expected)
    assert fused_scores[0] == pytest.approx(0.9)
    empty = merge_detections(boxes[:0], scores[:0], labels[:0])
    assert [t.numel() for t in empty] == [0, 0, 0]


def big_scene(path, seed: int = 5) -> tuple[np.ndarray, list[int]]:
    """A 4000x3000 photo-like background with twelve 256 px scenes of small shapes (8-20% of
    256 px: 20-50 px, 0.5-1.3% of the image's width) at known places."""
    import cv2

    from visiontool.data.synth import background, render_scene

    rng = np.random.default_rng(seed)
    canvas = background(rng, 3000, 4000)
    boxes, labels = [], []
    for row in range(3):
        for col in range(4):
            image, b, lab = render_scene(rng, 256, max_objects=4, object_size=(0.08, 0.2))
            y, x = 300 + row * 900, 300 + col * 900
            canvas[y : y + 256, x : x + 256] = image
            boxes += (b + [x, y, x, y]).tolist()
            labels += lab.tolist()
    cv2.imwrite(str(path), cv2.cvtColor(canvas.astype(np.uint8), cv2.COLOR_RGB2BGR))
    return np.array(boxes, np.float32), labels


def recall(out, boxes: np.ndarray, labels: list[int]) -> float:
    line = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    dets = line["detections"]
    if not dets:
        return 0.0
    iou = box_iou(torch.tensor(boxes), torch.tensor([d["box"] for d in dets]))
    found = [d["class_id"] for d in dets]
    hits = sum(
        any(iou[i, j] >= 0.5 and found[j] == labels[i] for j in range(len(dets)))
        for i in range(len(labels))
    )
    return hits / len(labels)


@pytest.mark.slow
def test_small_shapes_in_a_big_image_are_found_in_tiles_only(cli, tmp_path):
    image = tmp_path / "scan.jpg"
    boxes, labels = big_scene(image)
    assert len(labels) >= 20
    model = ["--model", "shapes-tinyssd", "--workers", "0", "--batch", "8", "--json"]
    whole = cli("detect", image, *model, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    tiled = cli("detect", image, *model, "--tile", "256", "--out", tmp_path / "tiled")
    assert tiled.exit_code == 0, tiled.output
    fused = cli("detect", image, *model, "--tile", "256", "--merge", "wbf",
                "--out", tmp_path / "fused")  # fmt: skip
    assert fused.exit_code == 0, fused.output
    assert recall(tmp_path / "whole", boxes, labels) < 0.2
    assert recall(tmp_path / "tiled", boxes, labels) >= 0.9
    assert recall(tmp_path / "fused", boxes, labels) >= 0.9
    line = json.loads((tmp_path / "tiled" / "predictions.jsonl").read_text().splitlines()[0])
    assert (line["width"], line["height"]) == (4000, 3000)
    assert all(0 <= d["box"][0] < d["box"][2] <= 4000 for d in line["detections"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tile", "16"], "--tile must be >= 32"),
        (["--tile", "256", "--tile-overlap", "0.95"], "--tile-overlap must be in [0, 0.9)"),
        (["--tile", "256", "--merge", "mean"], "--merge must be one of nms, wbf"),
        (["--tile", "256", "--model", "digits-lenet"], "--tile needs a detector"),
    ],
)
def test_bad_tiling_options_are_one_line_exit_2(cli, tmp_path, args, message):
    from tests.conftest import noise_image, save

    image = save(noise_image(64, 64), tmp_path / "a.png")
    model = [] if "--model" in args else ["--model", "shapes-tinyssd"]
    result = cli("detect", image, *model, *args, "--out", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert message in result.output
