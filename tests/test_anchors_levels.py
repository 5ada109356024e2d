"""ops.anchors: fitted anchor shapes spread over any number of feature levels by size."""

from __future__ import annotations

import math

import numpy as np
import pytest
from torchvision.models.detection.anchor_utils import AnchorGenerator

from visiontool.errors import ConfigError
from visiontool.ops.anchors import anchor_generator_args, level_groups, level_sizes, sort_by_area

# nine YOLO-like shapes, deliberately not sorted by area
NINE = np.array(
    [
        [116, 90],
        [10, 13],
        [33, 23],
        [16, 30],
        [373, 326],
        [30, 61],
        [62, 45],
        [156, 198],
        [59, 119],
    ],
    dtype=np.float64,
)
SORTED = sort_by_area(NINE)


def sizes_of(sizes):
    assert all(len(level) == 1 for level in sizes)
    return [level[0] for level in sizes]


def test_sort_by_area():
    areas = SORTED[:, 0] * SORTED[:, 1]
    assert np.all(np.diff(areas) > 0)
    assert sorted(map(tuple, SORTED)) == sorted(map(tuple, NINE))


@pytest.mark.parametrize(
    "levels, windows",
    [
        (1, [range(0, 9)]),
        (3, [range(0, 3), range(3, 6), range(6, 9)]),
        (4, [range(0, 3), range(2, 5), range(4, 7), range(6, 9)]),
        (5, [range(0, 2), range(2, 4), range(4, 6), range(5, 7), range(7, 9)]),
        (6, [range(0, 2), range(1, 3), range(3, 5), range(4, 6), range(6, 8), range(7, 9)]),
        (9, [range(i, i + 1) for i in range(9)]),
    ],
)
def test_nine_anchors_over_levels_windows(levels, windows):
    groups = level_groups(NINE, levels)
    assert len(groups) == levels
    for group, window in zip(groups, windows, strict=True):
        np.testing.assert_array_equal(group, SORTED[list(window)])
    used = {tuple(row) for group in groups for row in group}
    assert used == {tuple(row) for row in NINE}  # every fitted anchor is on some level


@pytest.mark.parametrize("k, levels", [(9, 3), (9, 5), (9, 6), (4, 5), (2, 6), (7, 3), (10, 4)])
def test_equal_counts_increasing_sizes_and_torchvision_generator(k, levels):
    wh = SORTED[np.linspace(0, 8, k).round().astype(int)] if k <= 9 else _more(k)
    sizes, ratios = anchor_generator_args(wh, levels)
    assert len(sizes) == len(ratios) == levels
    m = math.ceil(k / levels)
    assert [len(r) for r in ratios] == [m] * levels
    flat = sizes_of(sizes)
    assert all(b > a for a, b in zip(flat, flat[1:], strict=False)), flat
    generator = AnchorGenerator(sizes, ratios)
    counts = generator.num_anchors_per_location()
    assert counts == [m] * levels
    assert level_sizes(wh, levels) == tuple(flat)


def _more(k: int) -> np.ndarray:
    side = np.geomspace(8, 400, k)
    return np.stack([side, side * np.linspace(0.5, 2, k)], axis=1)


def test_multiple_of_levels_keeps_shapes_and_pools_sizes():
    sizes, ratios = anchor_generator_args(NINE, 3)
    for level, group in enumerate(np.split(SORTED, 3)):
        expected = math.exp(np.log(np.sqrt(group[:, 0] * group[:, 1])).mean())
        assert sizes[level][0] == pytest.approx(expected)
        assert ratios[level] == pytest.approx(tuple(group[:, 1] / group[:, 0]))


def test_one_anchor_per_level_is_exact():
    sizes, ratios = anchor_generator_args(NINE, 9)
    assert sizes_of(sizes) == [math.sqrt(w * h) for w, h in SORTED]
    assert [r for (r,) in ratios] == [h / w for w, h in SORTED]


def test_fewer_anchors_than_levels_interpolate_in_log_size():
    four = SORTED[[0, 3, 6, 8]]
    groups = level_groups(four, 5)
    assert [len(g) for g in groups] == [1] * 5
    # level i sits at t = i * 3/4 along the four anchors: ends exact, between geometric
    np.testing.assert_allclose(groups[0][0], four[0])
    np.testing.assert_allclose(groups[4][0], four[3])
    t = 0.75
    np.testing.assert_allclose(groups[1][0], four[0] ** (1 - t) * four[1] ** t)
    t = 0.5
    np.testing.assert_allclose(groups[2][0], four[1] ** (1 - t) * four[2] ** t)
    sizes, ratios = anchor_generator_args(four, 5)
    flat = sizes_of(sizes)
    assert all(b > a for a, b in zip(flat, flat[1:], strict=False))
    assert flat[0] == pytest.approx(math.sqrt(four[0, 0] * four[0, 1]))
    assert flat[-1] == pytest.approx(math.sqrt(four[3, 0] * four[3, 1]))
    assert AnchorGenerator(sizes, ratios).num_anchors_per_location() == [1] * 5


def test_single_anchor_repeats_on_every_level():
    sizes, ratios = anchor_generator_args([[20.0, 10.0]], 3)
    assert sizes_of(sizes) == pytest.approx([math.sqrt(200)] * 3)
    assert ratios == ((0.5,), (0.5,), (0.5,))


def test_scale_spec_dict_and_level_sizes():
    spec = {"wh": NINE.tolist(), "imgsz": 640}
    sizes, ratios = anchor_generator_args(spec, 5, scale=0.5)
    base, base_ratios = anchor_generator_args(NINE, 5)
    assert sizes_of(sizes) == pytest.approx([s / 2 for s in sizes_of(base)])
    assert ratios == base_ratios  # a uniform scale keeps the shapes
    assert level_sizes(spec, 5, scale=0.5) == pytest.approx(tuple(sizes_of(sizes)))
    # FCOS-style: one size per level, torchvision builds one anchor per location
    single = level_sizes(NINE, 5)
    generator = AnchorGenerator(tuple((s,) for s in single), ((1.0,),) * 5)
    assert generator.num_anchors_per_location() == [1] * 5


def test_bad_inputs():
    with pytest.raises(ConfigError):
        level_groups(NINE, 0)
    with pytest.raises(ConfigError):
        level_groups(np.zeros((0, 2)), 3)
    with pytest.raises(ValueError):
        level_groups(np.ones((3, 3)), 3)
