"""`--task single`: the largest object of each image, one box and one class.

Hand-made cases for the loss (L1 in pixels + w x cross-entropy), the largest-box target and the
metrics (class accuracy, box L1 in pixels and as a fraction of the image, IoU); the --box-weight
flag; a tiny model that overfits a few images; and the whole CLI round trip on `data synth`
data (train -> detect -> eval -> benchmark with the checkpoint alone).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer

from visiontool.metrics.single import single_object_metrics
from visiontool.models.single import build_single_object
from visiontool.tasks.single import largest_box
from visiontool.tasks.spec import get_task

SINGLE = get_task("single")


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest (and steadiest) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixed_model(*, box_weight: float = 20.0, class_bias=(0.0, 0.0, 0.0, 0.0)) -> torch.nn.Module:
    """A 4-class model at 64 px whose outputs are its last bias whatever the image: box numbers
    0 (sigmoid 0.5: centre 32, 32, size 32 x 32, so xyxy 16, 16, 48, 48) and `class_bias`."""
    torch.manual_seed(0)
    model = build_single_object(num_classes=4, backbone="tinyssd-base", size=64,
                                box_weight=box_weight)  # fmt: skip
    with torch.no_grad():
        model.head.out.weight.zero_()
        model.head.out.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, *class_bias]))
    return model.train()


def target(boxes, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


# --- loss ----------------------------------------------------------------------------------


def test_loss_is_box_l1_in_input_pixels_plus_weighted_cross_entropy():
    images = [torch.rand(3, 128, 128), torch.rand(3, 32, 64), torch.rand(3, 50, 50)]
    targets = [
        target([[0, 0, 64, 64]], [1]),  # x0.5 into the 64 px input: 0, 0, 32, 32 -> L1 16
        target([[8, 4, 40, 20]], [2]),  # W 64 (x1), H 32 (x2): 8, 8, 40, 40 -> L1 8
        target([], []),  # no box: adds nothing
    ]
    with torch.no_grad():
        losses = fixed_model()(images, SINGLE.targets(targets, "cpu"))
    assert float(losses["loss_box"]) == pytest.approx((4 * 16 + 4 * 8) / 8)
    assert float(losses["loss_cls"]) == pytest.approx(20 * math.log(4), rel=1e-6)
    weighted = fixed_model(box_weight=2.5, class_bias=(2.0, 0.0, 0.0, 0.0))
    with torch.no_grad():
        losses = weighted([images[0]], SINGLE.targets([target([[0, 0, 64, 64]], [0])], "cpu"))
    assert float(losses["loss_cls"]) == pytest.approx(2.5 * math.log(1 + 3 * math.exp(-2)))


def test_a_batch_without_boxes_has_zero_loss_that_reaches_the_weights():
    model = fixed_model()
    losses = model([torch.rand(3, 64, 64)], SINGLE.targets([target([], [])], "cpu"))
    total = sum(losses.values())
    total.backward()
    assert float(total.detach()) == 0.0 and model.head.out.bias.grad is not None


def test_eval_mode_gives_one_detection_per_image_in_its_own_pixels():
    model = fixed_model(class_bias=(0.0, 3.0, 0.0, 0.0)).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 200), torch.rand(3, 64, 64)])
    assert [tuple(o["boxes"].shape) for o in out] == [(1, 4), (1, 4)]
    assert out[0]["boxes"][0].tolist() == pytest.approx([50, 25, 150, 75])  # 1/4..3/4 of W, H
    assert out[0]["labels"].tolist() == [1]
    assert float(out[0]["scores"][0]) == pytest.approx(math.exp(3) / (math.exp(3) + 3))


# --- the target: the largest box -----------------------------------------------------------


def test_largest_box_by_area_first_of_equals_crowd_only_when_all_are():
    boxes = [[0, 0, 10, 10], [0, 0, 30, 5], [5, 5, 17, 15]]  # areas 100, 150, 120
    assert largest_box(boxes) == 1
    assert largest_box(boxes, iscrowd=[0, 1, 0]) == 2
    assert largest_box(boxes, iscrowd=[1, 1, 1]) == 1
    assert largest_box([[0, 0, 10, 10], [5, 5, 15, 15]]) == 0
    assert largest_box(np.zeros((0, 4))) == -1


def test_training_targets_keep_the_largest_object_and_its_class():
    targets = [target([[0, 0, 10, 10], [0, 0, 30, 5], [5, 5, 17, 15]], [3, 0, 2]),
               target([], [])]  # fmt: skip
    prepared = SINGLE.targets(targets, "cpu")
    assert prepared[0]["boxes"].tolist() == [[0, 0, 30, 5]]
    assert prepared[0]["labels"].tolist() == [0]
    assert prepared[1]["boxes"].shape == (0, 4) and prepared[1]["labels"].numel() == 0


# --- metrics -------------------------------------------------------------------------------


def test_metrics_on_hand_made_images():
    result = single_object_metrics(
        pred_boxes=[[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 0, 0]],
        pred_labels=[0, 1, -1],  # the third image has no prediction
        true_boxes=[[0, 0, 10, 20], [10, 10, 20, 20], [0, 0, 5, 5]],
        true_labels=[0, 2, 2],
        sizes=[(100, 50), (100, 100), (10, 10)],
        num_classes=3,
    )
    assert result.accuracy == pytest.approx(1 / 3)  # right, wrong class, no prediction
    assert result.box_l1 == pytest.approx((10 / 4 + 0) / 2)  # y2 off by 10 px; exact
    assert result.box_l1_rel == pytest.approx(((10 / 50) / 4 + 0) / 2)  # 10 px of 50 high
    assert result.mean_iou == pytest.approx((0.5 + 1.0) / 2)
    assert result.per_class_images.tolist() == [1, 0, 2]
    assert result.per_class_accuracy.tolist() == [1.0, -1.0, 0.0]
    assert result.per_class_box_l1.tolist() == [2.5, -1.0, 0.0]
    assert result.per_class_iou.tolist() == [0.5, -1.0, 1.0]


def test_task_score_rows_give_the_metrics_eval_reports():
    rows = [(np.array([0, 0, 10, 10.0]), 0, np.array([0, 0, 10, 20.0]), 0, (100, 50)), None]
    scored = SINGLE.score(rows, classes=["a", "b"], conf=None)
    assert scored.metrics == pytest.approx(
        {"accuracy": 1.0, "box_l1": 2.5, "box_l1_rel": 0.05, "mean_iou": 0.5}
    )
    assert [row["class"] for row in scored.per_class] == ["all", "a", "b"]
    assert set(SINGLE.metrics) <= set(scored.metrics)  # what --metric and --fail-under take


# --- --box-weight ----------------------------------------------------------------------------


def _train_params(args: list[str]) -> dict:
    from visiontool.cli.main import app

    command = typer.main.get_command(app).commands["train"]
    return command.make_context("train", args).params


def test_box_weight_flag_default_and_value_reach_the_model(tmp_path):
    from visiontool.data.datasets import open_dataset
    from visiontool.data.synth import synth_detection
    from visiontool.engine.train.setup import build_for_training
    from visiontool.engine.train.trainer import TrainConfig

    assert _train_params([])["box_weight"] == 20.0
    assert _train_params(["--box-weight", "5"])["box_weight"] == 5.0
    synth_detection(tmp_path / "d", n=3, imgsz=64, seed=1, max_objects=1)
    dataset = open_dataset(tmp_path / "d", split="train")
    config = TrainConfig(data=str(tmp_path / "d"), task="single", backbone="tinyssd-base",
                         imgsz=64, box_weight=5.0)  # fmt: skip
    module, info, _ = build_for_training(config, dataset)
    assert module.box_weight == 5.0 and info.build["box_weight"] == 5.0
    assert info.task == "single" and info.classes == dataset.classes and info.input_size == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "detect", "--box-weight", "5"], "--box-weight applies to --task single"),
        (["--task", "single", "--box-weight", "-1"], "--box-weight must be"),
        (["--task", "singel"], "did you mean 'single'"),
    ],
)
def test_bad_box_weight_or_task_is_one_line_exit_2(cli, tmp_path, args, message):
    result = cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "run").exists()


# --- learning ------------------------------------------------------------------------------


def test_a_tiny_model_overfits_a_few_images():
    """Eight 64 px images, each a coloured rectangle (its class) and a small decoy box: the
    model learns the big rectangle's class and box."""
    generator = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(8):
        image = torch.rand(3, 64, 64, generator=generator) * 0.3
        x1, y1 = torch.randint(0, 30, (2,), generator=generator).tolist()
        w, h = torch.randint(15, 30, (2,), generator=generator).tolist()
        image[i % 3, y1 : y1 + h, x1 : x1 + w] = 1.0
        images.append(image)
        targets.append(target([[x1, y1, x1 + w, y1 + h], [0, 0, 4, 4]], [i % 3, (i + 1) % 3]))
    torch.manual_seed(0)
    model = build_single_object(num_classes=3, backbone="tinyssd-base", size=64).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    prepared = SINGLE.targets(targets, "cpu")
    for _ in range(60):
        losses = model(images, prepared)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert float(losses["loss_box"].detach()) < 1.5  # pixels, from ~10
    assert float(losses["loss_cls"].detach()) < 0.5  # 20 x cross-entropy, from ~22
    with torch.no_grad():
        out = model.eval()(images)
    assert [int(o["labels"]) for o in out] == [i % 3 for i in range(8)]
    errors = [
        (o["boxes"][0] - p["boxes"][0]).abs().mean() for o, p in zip(out, prepared, strict=True)
    ]
    assert float(torch.stack(errors).mean()) < 3.0


# --- the command line, end to end -----------------------------------------------------------


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_cli_round_trip_synth_train_detect_eval_benchmark(cli, tmp_path):
    data, run = tmp_path / "shapes", tmp_path / "run"
    made = cli("data", "synth", "--out", data, "--n", "12", "--imgsz", "64", "--seed", "3",
               "--max-objects", "2")  # fmt: skip
    assert made.exit_code == 0, made.output
    trained = cli("train", "--data", data, "--task", "single", "--backbone", "tinyssd-base",
                  "--imgsz", "64", "--epochs", "1", "--batch", "4", "--workers", "0",
                  "--optimizer", "adamw", "--out", run)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "acc" in trained.output and "box_L1" in trained.output
    best = run / "weights" / "best.pt"
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["model_info"]["task"] == "single"

    val = sorted((data / "images" / "val").glob("*.jpg"))
    found = cli("detect", data / "images" / "val", "--weights", best, "--out", tmp_path / "det",
                "--workers", "0", "--json")  # fmt: skip
    assert found.exit_code == 0, found.output
    rows = _json_lines(found.stdout)
    assert len(rows) == len(val)
    for row in rows:  # one detection per image, on the image
        assert "classes" not in row and len(row["detections"]) == 1
        x1, y1, x2, y2 = row["detections"][0]["box"]
        assert 0 <= x1 <= x2 <= row["width"] and 0 <= y1 <= y2 <= row["height"]
    summary = json.loads((tmp_path / "det" / "summary.json").read_text())
    assert summary["task"] == "single" and summary["counts"]["detections"] == len(val)

    scored = cli("eval", "--data", data, "--weights", best, "--out", tmp_path / "ev",
                 "--workers", "0", "--json", "--fail-under", "accuracy=0")  # fmt: skip
    assert scored.exit_code == 0, scored.output
    metrics = _json_lines(scored.stdout)[0]
    assert set(metrics) >= {"accuracy", "box_l1", "box_l1_rel", "mean_iou", "per_class"}
    assert 0 <= metrics["accuracy"] <= 1 and metrics["box_l1"] >= 0
    bad_gate = cli("eval", "--data", data, "--weights", best, "--out", tmp_path / "ev2",
                   "--fail-under", "map50=0.5")  # fmt: skip
    assert bad_gate.exit_code == 2 and "accuracy" in bad_gate.output

    timed = cli("benchmark", "--task", "pipeline", "--weights", best, "--n", "1", "--repeat",
                "1", "--json")  # fmt: skip
    assert timed.exit_code == 0, timed.output
    assert _json_lines(timed.stdout)[-1]["ours_images_per_s"] > 0
