"""ops.anchors: fitted anchor shapes spread over any number of feature levels by size; and the
one ratio meaning users see (width / height, 2 = wide) against torchvision's height / width
inside the builders, with checkpoints rebuilding the anchors they were trained with."""

from __future__ import annotations

import math
from pathlib import Path

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


# ---------------------------------------------------------------------------- ratio convention
# Users write width / height (2 = wide) everywhere; create_model("detector", anchor_ratios=...)
# and the checkpoint's build dict hold torchvision's height / width, as they always have.

SHIPPED = Path(__file__).resolve().parents[1] / "visiontool" / "weights" / "shapes-frcnn.pt"
# shapes-frcnn's cell anchors (sizes 12..192, default ratios), recorded before the ratio
# convention changed: the shipped checkpoint must keep rebuilding exactly these.
SHIPPED_CELLS = [
    [[-8, -4, 8, 4], [-6, -6, 6, 6], [-4, -8, 4, 8]],
    [[-17, -8, 17, 8], [-12, -12, 12, 12], [-8, -17, 8, 17]],
    [[-34, -17, 34, 17], [-24, -24, 24, 24], [-17, -34, 17, 34]],
    [[-68, -34, 68, 34], [-48, -48, 48, 48], [-34, -68, 34, 68]],
    [[-136, -68, 136, 68], [-96, -96, 96, 96], [-68, -136, 68, 136]],
]
TINY = {"head": "frcnn", "backbone": "mobilenet_v3_small", "num_classes": 3, "imgsz": 128,
        "fpn_channels": 16, "box_head": 32}  # fmt: skip


def cell_wh(model) -> list[list[tuple[float, float]]]:
    """(w, h) of every cell anchor, per level, of a detector's own anchor generator."""
    from visiontool.models.heads.torchvision_parts import anchor_generator

    return [
        [(float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in cells.tolist()]
        for cells in anchor_generator(model).cell_anchors
    ]


class Captured(Exception):
    pass


def train_config(cli, monkeypatch, *args: str):
    """The TrainConfig `visiontool train ARGS` hands the engine (the run itself is skipped)."""
    from visiontool.engine.train import trainer

    seen = []

    def fake_run_train(config, callbacks=None):
        seen.append(config)
        raise Captured

    monkeypatch.setattr(trainer, "run_train", fake_run_train)
    result = cli("train", "--data", "unused", *args)
    assert isinstance(result.exception, Captured), result.output
    return seen[0]


def test_train_anchor_ratio_2_builds_anchors_twice_as_wide_as_tall(cli, monkeypatch):
    from types import SimpleNamespace

    from visiontool.engine.train.setup import build_detector_for_training

    config = train_config(
        cli, monkeypatch, "--head", "frcnn", "--backbone", "mobilenet_v3_small",
        "--anchor-sizes", "32,64,128", "--anchor-ratios", "2", "--imgsz", "128",
        "--fpn-channels", "16", "--box-head", "32",
    )  # fmt: skip
    data = SimpleNamespace(classes=["a", "b"], category_ids=[1, 2])
    module, info, _ = build_detector_for_training(config, data)
    for level in cell_wh(module):
        for w, h in level:
            assert w / h == pytest.approx(2, rel=0.1)  # wide (torchvision rounds to 1 px)
    # the checkpoint records torchvision's height / width, which every checkpoint holds
    assert info.build["anchor_ratios"] == [0.5]
    # a group per level and the default are converted alike
    config = train_config(cli, monkeypatch, "--head", "frcnn", "--anchor-ratios", "4;1;0.25")
    from visiontool.engine.train.setup import builder_ratios

    assert builder_ratios(config) == [[0.25], [1.0], [4.0]]
    assert builder_ratios(train_config(cli, monkeypatch, "--head", "frcnn")) is None


def test_builder_ratio_meaning_is_torchvision_height_over_width():
    """create_model's anchor_ratios (and a checkpoint's build) keep torchvision's h/w: an old
    checkpoint built with anchor_ratios [[2.0]] still rebuilds tall anchors."""
    from visiontool.models.factory import create_model

    levels = cell_wh(create_model("detector", **TINY, anchor_ratios=[[2.0]]))
    assert levels[0][0] == (22.0, 46.0)  # recorded before the convention change
    for level in levels:
        for w, h in level:
            assert h / w == pytest.approx(2, rel=0.1)


def test_fitted_anchors_rebuild_as_before():
    from visiontool.models.factory import create_model

    fit = {"wh": [[10, 20], [30, 15], [40, 40], [80, 50], [60, 120]], "scale": 0.5}
    levels = cell_wh(create_model("detector", **TINY, anchor_fit=fit))
    assert levels == [  # recorded before the convention change
        [(6.0, 12.0), (12.0, 6.0)],
        [(26.0, 26.0), (32.0, 20.0)],
        [(46.0, 28.0), (26.0, 52.0)],
    ]


def test_shipped_model_rebuilds_the_same_anchors():
    import torch

    from visiontool.models.factory import load_model
    from visiontool.models.heads.torchvision_parts import anchor_generator

    loaded = load_model(None, weights=str(SHIPPED), device="cpu")
    assert loaded.info.build["anchor_ratios"] is None
    cells = anchor_generator(loaded.module).cell_anchors
    assert [c.tolist() for c in cells] == SHIPPED_CELLS
    assert all(c.dtype == torch.float32 for c in cells)


def test_user_ratios_convert_once_keeping_order_and_groups():
    from visiontool.models.heads.anchors import torchvision_ratios

    assert torchvision_ratios(None) is None
    assert torchvision_ratios([2, 1, 0.5]) == [0.5, 1.0, 2.0]  # anchor i stays anchor i
    assert torchvision_ratios([[4.0], [1, 2]]) == [[0.25], [1.0, 0.5]]
    assert torchvision_ratios([2, -1]) == [2, -1]  # left for per_level to report as given


def test_ssd_user_ratio_gives_the_wide_and_the_tall_box():
    """DefaultBoxGenerator (SSD) takes w/h and adds r and 1/r: --anchor-ratios 2 gives a 2:1
    wide and a 1:2 tall box, whatever the meaning, and ratio 1 adds nothing."""
    from visiontool.models.heads.anchors import ssd_box_options, torchvision_ratios

    user = [1, 2, 3]
    options = ssd_box_options(6, 300, None, torchvision_ratios(user), lite=True)
    assert options["aspect_ratios"] == [[2.0, 3.0]] * 6
    assert options == ssd_box_options(6, 300, None, user, lite=True)


def test_resumed_run_keeps_its_checkpoint_ratios(tmp_path):
    """Runs recorded before ratios meant w/h hold h/w in their train args: a resume takes the
    ratios from the checkpoint's build, never converts them again."""
    from types import SimpleNamespace

    from visiontool.engine.train.setup import builder_ratios
    from visiontool.io.checkpoint import make_checkpoint, save_checkpoint

    last = tmp_path / "run" / "weights" / "last.pt"
    save_checkpoint(last, make_checkpoint({}, {"build": {"anchor_ratios": [[2.0]]}}))
    resumed = SimpleNamespace(resume=str(last), anchor_ratios=[[2.0]])
    assert builder_ratios(resumed) == [[2.0]]
    assert builder_ratios(SimpleNamespace(resume=None, anchor_ratios=[[2.0]])) == [[0.5]]
