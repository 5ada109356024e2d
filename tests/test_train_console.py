"""What a person sees from `visiontool train`: a header, one aligned table row per epoch, `-`
for undefined values (never -1), a per-class table at the end; args.json records the values
actually used; --name names the run folder, --model-name the model; metrics.png never plots
an undefined metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from visiontool.data.synth import synth_classification, synth_detection


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    synth_classification(out, n=40, imgsz=32, seed=3, kind="digits")
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=8, imgsz=64, fmt="coco", seed=5)
    return out


LENET = ("--task", "classify", "--model", "lenet", "--batch", "8", "--workers", "0",
         "--augment", "none", "--warmup", "0")  # fmt: skip


MINUS_ONE = re.compile(r"(?<![\w.-])-1(\.0+)?(?![\w.])")  # -1 as a value, not lenet-10cls


def table_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"\d+/\d+ ", line)]


def test_plain_console_has_a_header_and_one_aligned_row_per_epoch(cli, digits, tmp_path):
    result = cli("train", "--data", digits, *LENET, "--epochs", "2", "--val-every", "2",
                 "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 epochs, batch 8 x 1 process" in out and "AMP off" in out
    assert "30 train images, 10 val images, 10 classes" in out
    assert f"run     {tmp_path / 'run'}" in out
    assert "validating 10 images" in out
    rows = table_rows(out)
    assert [r.split()[0] for r in rows] == ["1/2", "2/2"]
    headers = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert headers and headers[0].split() == ["epoch", "cls_loss", "lr", "top1", "top5", "time"]
    assert len(headers) == 1  # once: the step and validation lines between rows are few
    # aligned: epoch left, then each value ends where its column's header ends
    ends = [m.end() for m in re.finditer(r"\S+", headers[0])][1:]
    for row in rows:
        assert row.startswith(row.split()[0] + " ")
        assert [m.end() for m in re.finditer(r"\S+", row)][1:] == ends, (headers[0], row)
    first, second = rows[0].split(), rows[1].split()
    assert first[3:5] == ["-", "-"]  # epoch 1 was not validated (--val-every 2)
    assert re.fullmatch(r"\d\.\d{3}", second[3]) and re.fullmatch(r"\d\.\de-\d\d", second[2])
    assert not MINUS_ONE.search(out)
    assert "best epoch 2: top1" in out and f"results saved to {tmp_path / 'run'}" in out


def test_plain_console_repeats_the_header_only_after_many_lines(cli, digits, tmp_path):
    result = cli("train", "--data", digits, *LENET, "--epochs", "2", "--batch", "1",
                 "--log-every", "1", "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    rows = [i for i, line in enumerate(lines) if re.match(r"\d+/2 ", line)]
    # 30 step lines an epoch: the second row gets the header again, right above it
    assert [i + 1 for i in headers] == rows
    assert headers[1] - headers[0] > 20


def test_one_epoch_is_singular(cli, digits, tmp_path):
    result = cli("train", "--data", digits, *LENET, "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "1 epoch," in result.output and "1 epochs" not in result.output
    assert len(table_rows(result.output)) == 1


def test_detection_console_shows_ap_pr_and_classes_without_minus_one(cli, shapes, tmp_path):
    result = cli("train", "--data", shapes, "--head", "frcnn", "--backbone", "mobilenet_v3_small",
                 "--imgsz", "64", "--epochs", "1", "--batch", "4", "--workers", "0",
                 "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "frcnn head, mobilenet_v3_small backbone, 64 px" in out
    header = next(line for line in out.splitlines() if line.startswith("epoch "))
    assert header.split() == ["epoch", "cls", "box", "obj", "rpn_box", "lr", "P", "R", "mAP50",
                              "mAP50-95", "time"]  # fmt: skip
    assert "P and R at conf 0.25" in out
    per_class = out.split("class    ")[1].splitlines()
    assert per_class[0].split() == ["images", "instances", "P", "R", "mAP50", "mAP50-95"]
    assert per_class[1].split()[0] == "all" and len(per_class) >= 7  # all + 6 classes
    assert not MINUS_ONE.search(out)
    # the metrics the row shows are the ones results.csv keeps
    csv = (tmp_path / "run" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"val/precision", "val/recall", "val/map50", "val/map"} <= set(csv)


def test_args_json_records_resolved_values(cli, shapes, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, "--imgsz", "64", "--epochs", "1", "--workers", "0",
                 "--backbone", "mobilenet_v3_small", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    args = json.loads((out / "args.json").read_text())
    assert args["head"] == "frcnn" and args["backbone"] == "mobilenet_v3_small"
    assert args["lr"] == pytest.approx(0.02 * 4 / 16)
    assert args["augment"] == "frcnn" and args["metric"] == "map50" and args["imgsz"] == 64
    assert args["fpn"] is not None and args["device"] == "cpu"
    assert args["model_name"] == "frcnn-6cls" and args["out"] == str(out)
    for key in ("head", "backbone", "lr", "augment", "metric", "imgsz", "fpn", "weights",
                "backbone_weights", "model_name"):  # fmt: skip
        assert args[key] is not None, key


def test_name_names_the_run_folder_and_model_name_the_model(cli, digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        result = cli("train", "--data", digits, *LENET, "--epochs", "1", "--name", "mnist",
                     "--model-name", "my-lenet")  # fmt: skip
        assert result.exit_code == 0, result.output
    assert (tmp_path / "runs/train/mnist/weights/best.pt").is_file()
    assert (tmp_path / "runs/train/mnist2/weights/best.pt").is_file()
    best = torch.load(tmp_path / "runs/train/mnist2/weights/best.pt", weights_only=True)
    assert best["model_info"]["name"] == "my-lenet"
    result = cli("train", "--data", digits, *LENET, "--epochs", "1", "--name", "mnist",
                 "--exist-ok")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs/train/mnist3").exists()
    assert cli("train", "--data", digits, *LENET, "--name", "a", "--out", "b").exit_code == 2


def test_metrics_png_never_plots_undefined_values(tmp_path):
    from visiontool.engine.train.log import (
        append_results,
        metric_panels,
        plot_results,
        read_results,
    )

    csv = tmp_path / "results.csv"
    for epoch, map50 in ((1, 0.2), (2, -1.0), (3, 0.4)):
        append_results(csv, {"epoch": epoch, "loss": 1.0 / epoch, "val/map50": map50,
                             "val/map": 0.1, "val/map_large": -1.0, "val/precision": 0.5,
                             "val/recall": -1.0})  # fmt: skip
    panels = metric_panels(read_results(csv))
    values = [v for series in panels.values() for _, ys in series.values() for v in ys]
    assert values and min(values) >= 0
    assert panels["mAP (val)"]["mAP50"] == ([1, 3], [0.2, 0.4])
    assert "R" not in panels["precision / recall (val, conf 0.25)"]  # never defined
    assert sum(len(series) for series in panels.values()) <= 6
    plot_results(csv, tmp_path)
    assert (tmp_path / "metrics.png").stat().st_size > 1000
