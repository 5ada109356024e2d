"""`--task multilabel`: every class an image shows, each scored by its own sigmoid.

Hand-made cases for the loss (binary cross-entropy), average precision (scikit-learn's
step-wise definition), per-class F1 and exact match at a threshold; data sets read as class
sets (a detection set, a single-label set, a multi-label CSV); the --threshold flag and how the
model's threshold decides what `detect` reports; a tiny model that overfits a few images; and
the CLI round trip on `data synth` data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image

from tests.conftest import noise_image, save
from visiontool.data.classification import ClassificationDataset, as_multilabel
from visiontool.data.detection import DetectionDataset
from visiontool.data.records import ImageRecord
from visiontool.metrics.multilabel import average_precision, multilabel_metrics
from visiontool.tasks.spec import get_task

MULTI = get_task("multilabel")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- loss ----------------------------------------------------------------------------------


def test_loss_is_binary_cross_entropy_of_each_class():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    targets = MULTI.targets([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], "cpu")
    # per class: log(1 + e^x) - y x
    expected = (math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e**-1) + math.log(2)) / 4
    assert float(MULTI.loss(logits, targets)["bce_loss"]) == pytest.approx(expected)


# --- metrics -------------------------------------------------------------------------------


def test_average_precision_is_the_step_wise_sum_over_ranked_scores():
    # ranked: hit, miss, hit, miss -> P 1 at R 0.5, P 2/3 at R 1
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # equal scores enter together: thresholds 0.9 (P 0), 0.8 (P 1/3, R 0.5), 0.1 (P 1/2, R 1)
    assert average_precision([0.9, 0.8, 0.8, 0.1], [0, 1, 0, 1]) == pytest.approx(
        0.5 * (1 / 3) + 0.5 * 0.5
    )
    assert average_precision([0.3, 0.2], [1, 1]) == 1.0
    assert average_precision([0.3, 0.2], [0, 0]) == -1.0  # no positive: undefined


def test_per_class_f1_map_over_classes_and_exact_match():
    scores = [[0.9, 0.2, 0.6], [0.8, 0.7, 0.1], [0.3, 0.6, 0.2], [0.1, 0.4, 0.3]]
    truth = [[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]]
    result = multilabel_metrics(np.array(scores), np.array(truth), threshold=0.5)
    # predicted at 0.5: [1 0 1], [1 1 0], [0 1 0], [0 0 0]
    assert result.precision.tolist() == [1.0, 0.5, 0.0]  # class 2: predicted once, wrongly
    assert result.recall.tolist() == [1.0, 0.5, -1.0]  # class 2 has no positive
    assert result.f1.tolist() == pytest.approx([1.0, 0.5, -1.0])
    assert result.ap.tolist() == pytest.approx([1.0, 0.5 + 0.5 * 2 / 3, -1.0])
    assert result.map == pytest.approx((1.0 + 0.5 + 0.5 * 2 / 3) / 2)  # classes with positives
    assert result.f1_macro == pytest.approx(0.75)
    assert result.exact_match == pytest.approx(1 / 4)  # only the second image
    assert result.support.tolist() == [2, 2, 0]


def test_a_class_never_predicted_has_precision_and_f1_zero():
    result = multilabel_metrics(np.array([[0.1], [0.2]]), np.array([[1], [0]]), threshold=0.5)
    assert result.precision.tolist() == [0.0] and result.f1.tolist() == [0.0]
    assert result.exact_match == 0.5


def test_task_score_orders_rows_by_data_set_class():
    mapping = np.array([1, 0])  # the model's class 0 is the data set's class 1
    prediction = type("P", (), {"probs": torch.tensor([0.9, 0.2])})()
    row = MULTI.image_row(prediction, torch.tensor([0.0, 1.0]), mapping=mapping, size=(8, 8))
    assert row[0].tolist() == pytest.approx([0.2, 0.9]) and row[1].tolist() == [False, True]
    scored = MULTI.score([row], classes=["a", "b"], conf=0.5)
    assert scored.metrics["exact_match"] == 1.0 and scored.metrics["map"] == 1.0
    assert [r["class"] for r in scored.per_class] == ["all", "a", "b"]


# --- data sets as class sets ---------------------------------------------------------------


def test_a_detection_set_becomes_the_classes_of_each_image(tmp_path):
    paths = [save(noise_image(16, 12, seed=i), tmp_path / f"{i}.png") for i in range(2)]
    records = [
        ImageRecord(1, paths[0], 16, 12, boxes=np.zeros((3, 4), np.float32),
                    labels=np.array([2, 0, 2])),
        ImageRecord(2, paths[1], 16, 12),  # no boxes
    ]  # fmt: skip
    detection = DetectionDataset(records, ["a", "b", "c"], root=tmp_path)
    labels = as_multilabel(detection)
    assert labels.multi_label and labels.label_sets == [[0, 2], []]
    assert labels.classes == ["a", "b", "c"]
    assert labels[0][1].tolist() == [1.0, 0.0, 1.0] and labels[1][1].tolist() == [0.0] * 3
    assert tuple(labels[0][0].shape) == (3, 12, 16)


def test_single_label_sets_become_sets_of_one_and_a_multilabel_csv_stays(tmp_path):
    from visiontool.data.datasets import open_dataset

    for name in ("a.png", "b.png"):
        save(noise_image(8, 8), tmp_path / name)
    single = ClassificationDataset([(tmp_path / "a.png", 1), (tmp_path / "b.png", 0)],
                                   ["cat", "dog"], root=tmp_path)  # fmt: skip
    assert as_multilabel(single).label_sets == [[1], [0]]
    (tmp_path / "multi.csv").write_text("a.png,cat dog\nb.png,dog\n")
    multi = open_dataset(tmp_path / "multi.csv")
    assert as_multilabel(multi) is multi and multi[0][1].tolist() == [1.0, 1.0]


# --- the threshold ---------------------------------------------------------------------------


def test_reported_classes_are_every_class_at_or_above_the_threshold_best_first():
    names = ["a", "b", "c", "d"]
    scores = torch.tensor([0.1, 0.5, 0.9, 0.4])
    chosen = MULTI.classes(scores, names, topk=1, conf=0.4)  # topk does not cut the list
    assert [c.label for c in chosen] == ["c", "b", "d"]
    assert [c.score for c in chosen] == pytest.approx([0.9, 0.5, 0.4])
    assert MULTI.classes(scores, names, topk=5, conf=0.95) == []


class FixedLogits(torch.nn.Module):
    """A 'classifier' whose logits are fixed: sigmoid 0.3, 0.5, 0.8 for classes a, b, c."""

    def __init__(self) -> None:
        super().__init__()
        probs = torch.tensor([0.3, 0.5, 0.8])
        self.register_buffer("logits", torch.log(probs / (1 - probs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def _loaded(conf: float | None):
    from visiontool.models.factory import LoadedModel
    from visiontool.models.info import ModelInfo

    info = ModelInfo(name="fixed", task="multilabel", classes=["a", "b", "c"],
                     raw_classes=["a", "b", "c"], category_ids=[0, 1, 2], input_size=8,
                     conf=conf)  # fmt: skip
    return LoadedModel(module=FixedLogits(), info=info, device=torch.device("cpu"))


@pytest.mark.parametrize(("recorded", "given", "labels"), [
    (0.4, None, ["c", "b"]),  # the model's own threshold
    (0.6, None, ["c"]),
    (None, None, ["c", "b"]),  # none recorded: the task's 0.4
    (0.6, 0.2, ["c", "b", "a"]),  # --conf wins
])  # fmt: skip
def test_predict_reports_the_classes_over_the_models_threshold_or_conf(recorded, given, labels):
    import visiontool

    image = np.zeros((8, 8, 3), np.uint8)
    (result,) = list(visiontool.predict(image, model=_loaded(recorded), conf=given))
    assert result.detections is None
    assert [c.label for c in result.classes] == labels
    assert result.to_dict()["classes"][0] == {"class_id": 2, "label": "c", "score": 0.8}


def _train_params(args: list[str]) -> dict:
    from visiontool.cli.main import app

    command = typer.main.get_command(app).commands["train"]
    return command.make_context("train", args).params


def test_threshold_flag_is_recorded_in_the_checkpoint_info(tmp_path):
    from visiontool.data.synth import synth_detection
    from visiontool.engine.train.setup import build_for_training, open_training_data
    from visiontool.engine.train.trainer import TrainConfig

    assert _train_params([])["threshold"] == 0.4
    assert _train_params(["--threshold", "0.7"])["threshold"] == 0.7
    synth_detection(tmp_path / "d", n=4, imgsz=32, seed=1)
    config = TrainConfig(data=str(tmp_path / "d"), task="multilabel", model="lenet",
                         threshold=0.7)  # fmt: skip
    train, val = open_training_data(config)  # a detection set, read as class sets
    assert train.multi_label and val is not None and val.multi_label
    _, info, _ = build_for_training(config, train)
    assert info.task == "multilabel" and info.conf == 0.7 and info.classes == train.classes
    assert info.preprocess["square"]  # the whole image, as training's resize shows it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "classify", "--threshold", "0.5"], "--threshold applies to --task multilabel"),
        (["--task", "multilabel", "--threshold", "1.5"], "--threshold must be in (0, 1)"),
        (["--task", "multilabel", "--metric", "top1"], "unknown --metric 'top1'"),
    ],
)
def test_bad_threshold_or_metric_is_one_line_exit_2(cli, tmp_path, args, message):
    result = cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


# --- learning ------------------------------------------------------------------------------


def test_a_tiny_model_overfits_a_few_images():
    """Eight 24 px images, each with a random set of coloured patches (red, green, blue,
    white: four classes); the model learns which are there."""
    generator = torch.Generator().manual_seed(0)
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    images, targets = [], []
    for i in range(8):
        image = torch.zeros(3, 24, 24)
        present = torch.rand(4, generator=generator) < 0.5
        present[i % 4] = True
        for k in torch.nonzero(present).flatten().tolist():
            x, y = torch.randint(0, 18, (2,), generator=generator).tolist()
            image[:, y : y + 6, x : x + 6] = colours[k][:, None, None]
        images.append(image)
        targets.append(present.float())
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.03)
    batch, prepared = torch.stack(images), MULTI.targets(targets, "cpu")
    for _ in range(80):
        loss = MULTI.loss(model(batch), prepared)["bce_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05  # from ~0.7
    with torch.no_grad():
        scores = MULTI.activation(model(batch)).numpy()
    result = multilabel_metrics(scores, prepared.numpy(), threshold=0.4)
    assert result.exact_match == 1.0 and result.map == 1.0


# --- the command line, end to end -----------------------------------------------------------


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_cli_round_trip_synth_train_detect_eval_benchmark(cli, tmp_path):
    data, run = tmp_path / "shapes", tmp_path / "run"
    made = cli("data", "synth", "--out", data, "--n", "12", "--imgsz", "64", "--seed", "4")
    assert made.exit_code == 0, made.output
    trained = cli("train", "--data", data, "--task", "multilabel", "--model", "lenet",
                  "--epochs", "1", "--batch", "4", "--workers", "0", "--threshold", "0.45",
                  "--out", run)  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "mAP" in trained.output and "exact" in trained.output
    best = run / "weights" / "best.pt"
    info = torch.load(best, map_location="cpu", weights_only=True)["model_info"]
    assert info["task"] == "multilabel" and info["conf"] == 0.45

    val = sorted((data / "images" / "val").glob("*.jpg"))
    for conf, least in ((None, 0.45), ("0", 0.0)):
        extra = [] if conf is None else ["--conf", conf]
        found = cli("detect", data / "images" / "val", "--weights", best, "--workers", "0",
                    "--out", tmp_path / f"det{conf}", "--json", *extra)  # fmt: skip
        assert found.exit_code == 0, found.output
        rows = _json_lines(found.stdout)
        assert len(rows) == len(val)
        for row in rows:  # every class over the threshold, best first; no boxes
            assert "detections" not in row
            scores = [c["score"] for c in row["classes"]]
            assert all(s >= least for s in scores) and scores == sorted(scores, reverse=True)
        if conf == "0":
            assert all(len(row["classes"]) == 6 for row in rows)

    scored = cli("eval", "--data", data, "--weights", best, "--out", tmp_path / "ev",
                 "--workers", "0", "--json", "--fail-under", "map=0")  # fmt: skip
    assert scored.exit_code == 0, scored.output
    metrics = _json_lines(scored.stdout)[0]
    assert set(metrics) >= {"map", "f1", "exact_match", "precision", "recall", "per_class"}
    assert metrics["threshold"] == 0.45 and len(metrics["per_class"]) == 6
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["map"] == metrics["map"]
    stricter = cli("eval", "--data", data, "--weights", best, "--out", tmp_path / "ev2",
                   "--workers", "0", "--json", "--conf", "0.9")  # fmt: skip
    assert _json_lines(stricter.stdout)[0]["threshold"] == 0.9

    timed = cli("benchmark", "--task", "pipeline", "--weights", best, "--n", "1", "--repeat",
                "1", "--json")  # fmt: skip
    assert timed.exit_code == 0, timed.output


@pytest.mark.slow
def test_trains_on_a_multilabel_csv(cli, tmp_path):
    """The multi-label CSV format: `filename,label label ...`, one CSV per split (the layout
    `data convert --to csv` writes)."""
    data = tmp_path / "csv"
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    names = list(colours)
    for split, n in (("train", 8), ("val", 4)):
        rows = ["filename,labels"]
        for i in range(n):
            present = [names[i % 3], names[(i + 1) % 3]] if i % 2 else [names[i % 3]]
            pixels = np.zeros((32, 32, 3), np.uint8)
            for k, name in enumerate(present):
                pixels[4 + 12 * k : 14 + 12 * k, 4:14] = colours[name]
            save(Image.fromarray(pixels), data / "images" / split / f"{i}.png")
            rows.append(f"images/{split}/{i}.png,{' '.join(present)}")
        (data / f"{split}.csv").write_text("\n".join(rows) + "\n")
    trained = cli("train", "--data", data, "--task", "multilabel", "--model", "lenet",
                  "--epochs", "1", "--batch", "4", "--workers", "0", "--out", tmp_path / "run",
                  "--json")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    summary = _json_lines(trained.stdout)[-1]
    assert summary["best_metric"] == "map" and summary["per_class"][0]["class"] == "all"
    assert [r["class"] for r in summary["per_class"][1:]] == ["blue", "green", "red"]
    assert Path(summary["best"]).is_file()
