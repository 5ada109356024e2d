"""`visiontool models info NAME`: parameters per part, FLOPs per image (2 x multiply-adds) and
the receptive field of each stage, checked against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visiontool.models.complexity import Field, parameter_groups, receptive_fields


def fields(model: nn.Module, size: int, channels: int = 1) -> dict[str, tuple]:
    """name -> (r, j, start) of each stage and map."""
    rows = receptive_fields(model, torch.zeros(1, channels, size, size))
    return {row.name: (row.field.size, row.field.jump, row.field.start) for row in rows}


def test_receptive_field_of_a_hand_checked_stack():
    """5x5 input; 3x3 stride 2: r = 1 + 2 = 3, j = 2, first centre 0.5 + 1 = 1.5; then 3x3
    (padding 1): r = 3 + 2 * 2 = 7, j = 2, centre 1.5 + (1 - 1) * 2."""
    stack = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, padding=1))
    rows = receptive_fields(stack, torch.zeros(1, 1, 5, 5))
    assert [(r.name, r.kind, r.shape) for r in rows] == [
        ("0", "stage", (1, 2, 2)), ("1", "stage", (1, 2, 2)), ("output", "map", (1, 2, 2)),
    ]  # fmt: skip
    assert [astuple(r.field) for r in rows] == [(3, 2, 1.5), (7, 2, 1.5), (7, 2, 1.5)]


def astuple(field: Field) -> tuple:
    return field.size, field.jump, field.start


def test_max_pool_and_dilated_conv():
    """2x2 max-pool stride 2: r 2, j 2, centre 1 (pixels 0 and 1); a 3x3 conv of dilation 2
    spans 5 inputs: r = 2 + (3 - 1) * 2 * 2 = 10, and padding 2 keeps the centre."""
    stack = nn.Sequential(nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3, dilation=2, padding=2))
    got = fields(stack, 8)
    assert got["0"] == (2, 2, 1.0)
    assert got["1"] == (10, 2, 1.0)


class Branchy(nn.Module):
    """A residual block with a strided 1x1 shortcut, two concatenated branches, a global gate
    (squeeze-and-excitation) and a functional pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(2, 2, 3, padding=1))  # fmt: skip
        self.shortcut = nn.Conv2d(1, 2, 1, stride=2)
        self.narrow = nn.Conv2d(2, 2, 1)
        self.wide = nn.Conv2d(2, 2, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.main(x) + self.shortcut(x)  # main r 7, shortcut r 1, both j 2
        x = torch.cat([self.narrow(x), self.wide(x)], dim=1)  # the 5x5 branch: 7 + 4 * 2
        x = x * torch.sigmoid(F.adaptive_avg_pool2d(x, 1))  # a gate: sees everything
        return F.max_pool2d(x, 3, stride=2, padding=1)  # 15 + 2 * 2, j 4


def test_shortcuts_and_gates_follow_the_main_path_branches_the_largest():
    got = fields(Branchy(), 16)
    assert list(got) == ["main", "shortcut", "narrow", "wide", "output"]
    assert got["main"] == (7, 2, 0.5)
    assert got["shortcut"] == (1, 2, 0.5)
    assert got["output"] == (19, 4, 0.5)


def test_global_pooling_and_fully_connected_layers_see_everything():
    stack = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1), nn.Conv2d(1, 1, 1))
    rows = receptive_fields(stack, torch.zeros(1, 1, 9, 9))
    assert rows[-1].field.is_global and rows[-1].to_dict()["size"] is None
    assert math.isinf(rows[-1].field.size)


def test_parameter_groups_add_up_to_the_total():
    from visiontool.models.factory import create_model

    model = create_model("frcnn-mobile-320", weights=None)
    model.backbone.body["0"].requires_grad_(False)
    groups = {g.name: g for g in parameter_groups(model)}
    assert list(groups) == ["backbone.body", "backbone.fpn", "rpn", "roi_heads"]
    assert sum(g.total for g in groups.values()) == sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.backbone.body["0"].parameters())
    assert groups["backbone.body"].trainable == groups["backbone.body"].total - frozen

    shared = nn.Linear(2, 2)
    odd = nn.Module()
    odd.scale = nn.Parameter(torch.ones(3))  # held by the model itself
    odd.a, odd.b, odd.act = shared, shared, nn.ReLU()  # shared: counted once
    assert [(g.name, g.total) for g in parameter_groups(odd)] == [("a", 6), ("(own)", 3)]


def lenet_hand_count() -> tuple[int, int]:
    """(multiply-adds, parameters) of LeNet-5 on 1x32x32 with 10 classes, from its layer
    shapes: conv = C_out x H_out x W_out x (C_in x k x k), linear = in x out."""
    convs = [(1, 6, 5, 28), (6, 16, 5, 10), (16, 120, 5, 1)]  # (C_in, C_out, k, output side)
    linears = [(120, 84), (84, 10)]
    macs = sum(cout * side * side * cin * k * k for cin, cout, k, side in convs)
    macs += sum(n_in * n_out for n_in, n_out in linears)
    params = sum(cout * (cin * k * k + 1) for cin, cout, k, _ in convs)
    params += sum(n_out * (n_in + 1) for n_in, n_out in linears)
    return macs, params


def test_lenet_json_flops_are_twice_the_hand_counted_multiply_adds(cli):
    result = cli("models", "info", "lenet", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    macs, params = lenet_hand_count()
    assert report["flops"] == 2 * macs == 833_040
    assert "2 x multiply-adds" in report["flops_note"]
    assert report["input"] == [1, 32, 32]
    assert (
        report["parameters"]["total"]
        == params
        == sum(g["total"] for g in report["parameters"]["groups"])
    )
    last = report["receptive_fields"][-1]
    assert (last["name"], last["size"], last["jump"]) == ("features.c5", 32, 4)  # all 32 px


def test_a_detector_shows_its_parts_and_a_stage_table(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    result = cli("models", "info", "tinyssd", "--imgsz", "128")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "input 3x128x128" in out and "FLOPs per image at 128x128" in out
    assert "FLOPs = 2 x multiply-adds" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for part in ("backbone", "extras", "cls_convs", "box_convs"):
        assert part in rows
    assert rows["backbone.blocks.2"][1:4] == ["64x16x16", "8", "36"]  # 3 down blocks: j 8
    maps = [line.split() for line in out.splitlines() if line.startswith("feature map")]
    assert [m[4] for m in maps] == ["8", "16", "32", "64", "64"]  # j
    assert maps[-1][5] == "global"  # r: the last map is a global max-pool


def test_backbone_option_composes_and_is_checked(cli):
    result = cli("models", "info", "single", "--backbone", "resnet18", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backbone"] == "resnet18"
    stage = {f["name"]: f for f in report["receptive_fields"]}["backbone.body.layer4"]
    assert (stage["size"], stage["jump"]) == (435, 32)  # ResNet-18's well-known 435 px
    wrong = cli("models", "info", "lenet", "--backbone", "resnet18")
    assert wrong.exit_code == 2 and "composed over a backbone" in wrong.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["models", "info", "lenett"], "unknown model 'lenett' (did you mean 'lenet'"),
        (["models", "info", "lenet", "--imgsz", "64"], "does not run on a 64x64 input"),
        (["models", "--json", "info", "lenet"], "put the options of 'info' after it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, words):
    result = cli(*args)
    assert result.exit_code == 2
    assert words in result.output and len(result.output.strip().splitlines()) == 1
