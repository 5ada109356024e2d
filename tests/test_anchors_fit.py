"""engine.anchors.fit: k-means / evolution recover planted shapes; stats; anchors.json
(io.anchors_file) written from a fit and read back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from visiontool.engine.anchors.fit import (
    FitConfig,
    anchor_stats,
    anchors_json,
    box_shapes,
    evolve_anchors,
    fit_anchors,
    kmeans_anchors,
)
from visiontool.errors import ConfigError, DataError
from visiontool.io.anchors_file import (
    anchors_document,
    anchors_for_levels,
    read_anchors_json,
    write_anchors_json,
)
from visiontool.ops.anchors import anchor_generator_args

PLANTED = np.array(
    [
        [10, 13],
        [16, 30],
        [33, 23],
        [30, 61],
        [62, 45],
        [59, 119],
        [116, 90],
        [156, 198],
        [373, 326],
    ],
    dtype=np.float64,
)


def planted_boxes(per: int = 150, noise: float = 0.06, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shapes = np.repeat(PLANTED, per, axis=0)
    return shapes * np.exp(rng.normal(0, noise, shapes.shape))


def test_stats_hand_case():
    # (2,2) vs anchor (2,2): IoU 1; (4,1) vs (2,2): inter 2, union 6 -> 1/3; ratio metric 0.5
    stats = anchor_stats(np.array([[2.0, 2.0], [4.0, 1.0]]), np.array([[2.0, 2.0]]))
    assert stats.boxes == 2
    assert stats.mean_iou == pytest.approx(2 / 3)
    assert stats.bpr == 0.5
    assert stats.bpr_ratio == 1.0
    assert stats.anchors_per_box == 0.5
    assert stats.anchors_per_box_ratio == 1.0
    strict = anchor_stats(np.array([[2.0, 2.0], [4.0, 1.0]]), np.array([[2.0, 2.0]]), thr=1.5)
    assert strict.bpr_ratio == 0.5


def test_kmeans_recovers_planted_shapes():
    found = kmeans_anchors(planted_boxes(), 9, seed=1)
    assert found.shape == (9, 2)
    areas = found[:, 0] * found[:, 1]
    assert np.all(np.diff(areas) >= 0)  # sorted by area
    np.testing.assert_allclose(found, PLANTED, rtol=0.08)


def test_evolve_never_worse_and_recovers_from_a_bad_start():
    wh = planted_boxes(per=60)
    start = PLANTED * np.array([1.4, 0.7])
    before = anchor_stats(wh, start).mean_iou
    evolved = evolve_anchors(wh, start, generations=400, seed=0)
    after = anchor_stats(wh, evolved).mean_iou
    assert after > before + 0.05
    assert evolve_anchors(wh, PLANTED, generations=50).shape == (9, 2)


def test_fit_anchors_kmeans_and_evolve():
    wh = planted_boxes()
    result = fit_anchors(wh, FitConfig(num=9, imgsz=640))
    assert result.stats.mean_iou > 0.85 and result.stats.bpr == 1.0
    evolved = fit_anchors(wh, FitConfig(num=9, algo="evolve", generations=100))
    assert evolved.initial is not None
    assert evolved.stats.mean_iou >= evolved.initial.mean_iou
    with pytest.raises(DataError):
        fit_anchors(wh[:3], FitConfig(num=9))
    with pytest.raises(ConfigError):
        fit_anchors(wh, FitConfig(algo="magic"))


def test_box_shapes_scale_long_side_skip_crowd_and_tiny():
    record = SimpleNamespace(
        width=200,
        height=100,
        boxes=np.array(
            [[0, 0, 50, 20], [10, 10, 110, 90], [0, 0, 3, 3], [0, 0, 100, 100]], np.float32
        ),
        iscrowd=np.array([False, False, False, True]),
    )
    wh, dropped = box_shapes([record], 400, min_size=2.0)
    np.testing.assert_allclose(wh, [[100, 40], [200, 160], [6, 6]])
    assert dropped == 0
    wh, dropped = box_shapes([record], 100, min_size=2.0)  # (3,3) -> (1.5,1.5) dropped
    assert dropped == 1 and len(wh) == 2


def test_anchors_json_schema_and_round_trip(tmp_path):
    result = fit_anchors(planted_boxes(per=40), FitConfig(num=9, imgsz=512))
    doc = anchors_json(result)
    assert doc["num"] == 9 and doc["imgsz"] == 512
    assert len(doc["wh"]) == 9 and len(doc["sizes"]) == 9 and len(doc["ratios"]) == 9
    for (w, h), (size,), (ratio,) in zip(doc["wh"], doc["sizes"], doc["ratios"], strict=True):
        assert size == pytest.approx(np.sqrt(w * h), rel=1e-3)
        assert ratio == pytest.approx(w / h, rel=1e-3)  # width / height, as every ratio
    assert 0 < doc["mean_iou"] <= 1 and 0 < doc["bpr"] <= 1
    path = write_anchors_json(tmp_path / "anchors.json", doc)
    assert read_anchors_json(path) == json.loads(json.dumps(doc))
    assert list(doc)[:5] == ["num", "imgsz", "wh", "sizes", "ratios"]
    assert set(doc) == {
        *("num", "imgsz", "wh", "sizes", "ratios", "mean_iou", "bpr", "bpr_ratio"),
        *("anchors_per_box", "boxes", "algo", "iou", "thr", "source"),
    }


def test_default_fit_feeds_every_level_count(tmp_path):
    """The bug: a default `--num 9` file was refused by models with 3, 5 or 6 levels."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    result = fit_anchors(planted_boxes(per=40), FitConfig(imgsz=640))  # default num=9
    path = write_anchors_json(tmp_path / "anchors.json", anchors_json(result))
    for levels in (1, 3, 4, 5, 6, 12):
        sizes, ratios = anchors_for_levels(path, levels, imgsz=320)
        counts = AnchorGenerator(sizes, ratios).num_anchors_per_location()
        assert len(counts) == levels and len(set(counts)) == 1
        assert [s for (s,) in sizes] == sorted(s for (s,) in sizes)
        single, none = anchors_for_levels(path, levels, imgsz=320, sizes_only=True)
        assert none is None and single == sizes
    sizes, _ = anchors_for_levels(read_anchors_json(path), 9)
    full, _ = anchors_for_levels(path, 9, imgsz=320)
    assert [f for (f,) in full] == pytest.approx([s / 2 for (s,) in sizes])


def test_read_anchors_json_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_anchors_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        read_anchors_json(bad)
    bad.write_text(json.dumps({"num": 2, "imgsz": 64, "wh": [[1, 2]], "sizes": [], "ratios": []}))
    with pytest.raises(DataError, match="'wh'"):
        read_anchors_json(bad)
    bad.write_text(json.dumps({"num": 1}))
    with pytest.raises(DataError, match="missing"):
        read_anchors_json(bad)
    bad.write_text(json.dumps({"num": 1, "imgsz": 64, "wh": [[1, -2]], "sizes": [], "ratios": []}))
    with pytest.raises(DataError, match="positive"):
        read_anchors_json(bad)
    bad.write_text(json.dumps({"num": 1, "imgsz": 0, "wh": [[1, 2]], "sizes": [], "ratios": []}))
    with pytest.raises(DataError, match="'imgsz'"):
        read_anchors_json(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="missing num"):
        read_anchors_json(bad)


def test_anchor_generator_args_reproduce_shapes_in_torchvision():
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    spec = {"wh": [[40.0, 10.0], [10.0, 10.0], [30.0, 60.0], [100.0, 50.0]]}
    sizes, ratios = anchor_generator_args(spec, 4)
    assert sizes == ((10.0,), (20.0,), (np.sqrt(1800),), (np.sqrt(5000),))
    generator = AnchorGenerator(sizes, ratios)
    cells = [c.numpy() for c in generator.cell_anchors]
    expected = [[10, 10], [40, 10], [30, 60], [100, 50]]
    for cell, (w, h) in zip(cells, expected, strict=True):
        assert cell.shape == (1, 4)
        assert abs(cell[0, 2] - cell[0, 0] - w) <= 1 and abs(cell[0, 3] - cell[0, 1] - h) <= 1
    sizes2, ratios2 = anchor_generator_args(spec, 2)
    assert sizes2[0] == (pytest.approx(np.sqrt(10 * 20)),)
    assert ratios2[0] == (1.0, 0.25) and ratios2[1] == (2.0, 0.5)
    assert [len(c) for c in AnchorGenerator(sizes2, ratios2).cell_anchors] == [2, 2]
    assert anchor_generator_args(spec, 2, scale=0.5)[0][0] == (pytest.approx(np.sqrt(50)),)
    assert anchor_generator_args(np.array(spec["wh"]), 4) == (sizes, ratios)
    with pytest.raises(ConfigError):
        anchor_generator_args(spec, 0)


def test_anchors_json_ratios_are_width_over_height_and_readers_use_wh(tmp_path):
    """A wide shape has ratio > 1 in the file; what readers build from the file (torchvision's
    AnchorGenerator, whose aspect ratio is h/w) is that same wide shape, from `wh` alone."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    doc = anchors_document(np.array([[80.0, 20.0], [15.0, 60.0]]), imgsz=200)
    assert doc["wh"] == [[15.0, 60.0], [80.0, 20.0]]  # by area
    assert doc["ratios"] == [[0.25], [4.0]]
    path = write_anchors_json(tmp_path / "anchors.json", doc)
    sizes, ratios = anchors_for_levels(path, 2)
    assert ratios == ((4.0,), (0.25,))  # torchvision's h/w: the inverse of the file's ratios
    cells = [c[0].tolist() for c in AnchorGenerator(sizes, ratios).cell_anchors]
    assert [(x2 - x1, y2 - y1) for x1, y1, x2, y2 in cells] == [(16.0, 60.0), (80.0, 20.0)]
    # the file's ratios are for people: readers take the shapes from wh, whatever they say
    stale = {**doc, "ratios": [[4.0], [0.25]]}  # as files written before the change read
    assert anchors_for_levels(stale, 2) == (sizes, ratios)
