"""The pictures a training run leaves for a person: labels.png (what the data holds),
train_batch.jpg (the first batch after augmentation), and the best epoch's pr_curve.png and
confusion_matrix.png; the per-class table of a classifier; a picture that fails never ends a
run.

One detection run and one classification run serve most tests (module fixtures). Every figure
is captured as it is saved, so the tests read what was drawn (bar heights, titles, matrices),
not only that a file exists."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visiontool.data.synth import synth_classification, synth_detection


class Run:
    """A CLI training run with what it drew: figures by file name, confusion matrices drawn."""

    def __init__(self, out: Path, *args: str) -> None:
        from visiontool.cli.main import app
        from visiontool.engine.evaluate import plots
        from visiontool.io import plotting

        self.out = out
        self.figures: dict[str, object] = {}
        self.matrices: list[np.ndarray] = []
        save_figure, plot_confusion = plotting.save_figure, plots.plot_confusion

        def keep_figure(fig, path):
            self.figures[Path(path).name] = fig
            return save_figure(fig, path)

        def keep_matrix(matrix, names, path, **kwargs):
            self.matrices.append(np.asarray(matrix).copy())
            return plot_confusion(matrix, names, path, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(plotting, "save_figure", keep_figure)
            patch.setattr(plots, "plot_confusion", keep_matrix)
            self.result = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert self.result.exit_code == 0, self.result.output
        assert "not written" not in self.result.output  # a picture failed: a real bug here

    def title(self, name: str) -> list[str]:
        return [ax.get_title() for ax in self.figures[name].axes]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=8, imgsz=64, fmt="coco", seed=5)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    synth_classification(out, n=40, imgsz=32, seed=3, kind="digits")
    return out


@pytest.fixture(scope="module")
def detection(shapes, tmp_path_factory) -> Run:
    return Run(tmp_path_factory.mktemp("det") / "run", "train", "--data", str(shapes),
               "--head", "frcnn", "--backbone", "mobilenet_v3_small", "--imgsz", "64",
               "--epochs", "1", "--batch", "4", "--workers", "0")  # fmt: skip


# sgd at a constant lr 0.05 on 30 digits, best by top5: epoch 2 of 3 is the best (seeded)
CLASSIFY = ("--task", "classify", "--model", "lenet", "--batch", "8", "--workers", "0",
            "--augment", "none", "--warmup", "0", "--lr", "0.05", "--schedule", "constant",
            "--metric", "top5")  # fmt: skip


@pytest.fixture(scope="module")
def classification(digits, tmp_path_factory) -> Run:
    return Run(tmp_path_factory.mktemp("cls") / "run", "train", "--data", str(digits),
               *CLASSIFY, "--epochs", "3")  # fmt: skip


def picture(path: Path) -> np.ndarray:
    """The decoded RGB pixels of a PNG or JPEG, after checking it is a whole, valid file."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def grid_side(tiles: int) -> int:
    """Pixels along a side of the square grid of `tiles` tiles (as `data show` lays them)."""
    from visiontool.data.show import PAD, TILE

    per_row = int(np.ceil(np.sqrt(tiles)))
    return per_row * (TILE + PAD) + PAD


def tiles_of(pixels: np.ndarray, count: int) -> list[np.ndarray]:
    from visiontool.data.show import PAD, TILE

    per_row = int(np.ceil(np.sqrt(count)))
    return [pixels[PAD + (i // per_row) * (TILE + PAD):][:TILE, PAD + (i % per_row) *
                                                           (TILE + PAD):][:, :TILE]
            for i in range(count)]  # fmt: skip


def test_detection_run_writes_every_picture(detection):
    sizes = {name: picture(detection.out / name).shape[:2]
             for name in ("labels.png", "train_batch.jpg", "pr_curve.png",
                          "confusion_matrix.png")}  # fmt: skip
    assert sizes["labels.png"] == (1000, 1000)
    assert sizes["train_batch.jpg"] == (grid_side(4), grid_side(4))  # batch 4: a 2 x 2 grid
    assert min(sizes["pr_curve.png"]) >= 400 and min(sizes["confusion_matrix.png"]) >= 400
    # the best epoch's validation, as `visiontool eval` draws it (with a background class)
    assert detection.title("pr_curve.png")[0] == "Precision-recall at IoU 0.5, best epoch 1"
    assert detection.title("confusion_matrix.png")[0].startswith("Confusion matrix, best epoch 1")
    assert detection.matrices[-1].shape == (7, 7)  # 6 classes + background


def test_detection_labels_png_counts_the_training_boxes(detection, shapes):
    from visiontool.data.datasets import open_dataset
    from visiontool.data.stats import dataset_stats

    stats = dataset_stats(open_dataset(shapes, split="train"))
    axes = {ax.get_title().split(" (")[0]: ax for ax in detection.figures["labels.png"].axes}
    assert set(axes) >= {"instances per class", "box centres", "box sizes"}
    bars = axes["instances per class"]
    assert [t.get_text() for t in bars.get_xticklabels()] == [c["name"] for c in stats["classes"]]
    assert [p.get_height() for p in bars.patches] == [c["objects"] for c in stats["classes"]]
    for name in ("box centres", "box sizes"):  # one dot per box, inside the unit square
        points = np.asarray(axes[name].collections[0].get_offsets())
        assert len(points) == stats["objects"]
        assert points.min() >= 0 and points.max() <= 1


def test_detection_train_batch_shows_the_augmented_images_with_boxes(detection):
    pixels = picture(detection.out / "train_batch.jpg").astype(np.float64)
    for tile in tiles_of(pixels, 4):
        assert tile.std() > 10  # an image, not a blank or black tile (e.g. [0, 1] as uint8)
    # boxes and tags in the class palette: strongly saturated pixels are there
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 150).mean() > 0.005


def test_classifier_labels_and_batch(classification, digits):
    bars = classification.figures["labels.png"].axes[0]
    assert bars.get_title() == "images per class (30 images)"
    assert [p.get_height() for p in bars.patches] == [3] * 10
    assert [t.get_text() for t in bars.get_xticklabels()] == [str(d) for d in range(10)]
    pixels = picture(classification.out / "train_batch.jpg")
    assert pixels.shape[:2] == (grid_side(8), grid_side(8))  # batch 8: a 3 x 3 grid
    tiles = tiles_of(pixels.astype(np.float64), 9)
    assert all(tile.std() > 10 for tile in tiles[:8])
    assert tiles[8].min() == 255  # the ninth place is empty


def test_confusion_matrix_is_the_best_epochs_as_eval_draws_it(
    classification, digits, tmp_path, monkeypatch
):
    """Drawn once, at the end, from the best epoch's validation (epoch 2 of 3): the matrix
    `eval --weights best.pt` draws, not the one of last.pt."""
    from visiontool.engine.evaluate import plots
    from visiontool.engine.evaluate.run import EvalConfig, run_eval

    assert "best epoch 2: top5" in classification.result.output
    assert len(classification.matrices) == 1
    assert classification.title("confusion_matrix.png")[0] == "Confusion matrix, best epoch 2"
    drawn = classification.matrices[0]
    assert drawn.sum() == 10  # every validation image
    by_eval: dict[str, np.ndarray] = {}

    def keep(matrix, names, path, **kwargs):
        by_eval[Path(path).parent.name] = np.asarray(matrix)
        return Path(path)

    monkeypatch.setattr(plots, "plot_confusion", keep)
    for weights in ("best", "last"):
        checkpoint = classification.out / "weights" / f"{weights}.pt"
        run_eval(EvalConfig(data=digits, weights=str(checkpoint), out=tmp_path / weights,
                            device="cpu", workers=0))  # fmt: skip
    assert np.array_equal(drawn, by_eval["best"])
    assert not np.array_equal(drawn, by_eval["last"])
    assert not (classification.out / "pr_curve.png").exists()  # classifiers have no boxes


def test_classifier_prints_a_per_class_table_of_the_best_epoch(classification):
    lines = classification.result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("validation of epoch"))
    assert re.fullmatch(r"validation of epoch 2 \(top1 \d\.\d{3}, top5 \d\.\d{3}; "
                        r"R = the class's top-1 accuracy\):", lines[start])  # fmt: skip
    header, *rows = lines[start + 1 : start + 13]
    assert header.split() == ["class", "images", "P", "R", "F1"]
    assert [r.split()[0] for r in rows] == ["all", *(str(d) for d in range(10))]
    assert rows[0].split()[1] == "10" and all(r.split()[1] == "1" for r in rows[1:])
    ends = [m.end() for m in re.finditer(r"\S+", header)][1:]
    for row in rows:  # aligned under the header; defined values only (no -1)
        assert [m.end() for m in re.finditer(r"\S+", row)][1:] == ends, (header, row)
        assert all(re.fullmatch(r"\d\.\d{3}", v) for v in row.split()[2:])
    drawn = classification.matrices[0]
    recall = [float(r.split()[3]) for r in rows[1:]]  # R: the class's top-1 accuracy
    assert recall == pytest.approx(np.diag(drawn) / drawn.sum(axis=1), abs=5e-4)


def test_plain_console_prints_the_table_header_once(classification):
    lines = classification.result.output.splitlines()
    headers = [line for line in lines if line.startswith("epoch ")]
    rows = [line for line in lines if re.match(r"\d+/3 ", line)]
    assert len(headers) == 1 and len(rows) == 3
    assert lines.index(headers[0]) == lines.index(rows[0]) - 1
    # CliRunner's console is 80 columns wide: every line fits, but those naming a long path
    wide = [line for line in lines if len(line) > 80 and not re.search(r"/\S*/", line)]
    assert not wide


def test_a_failing_picture_is_one_warning_and_the_run_goes_on(cli, digits, tmp_path, monkeypatch):
    from visiontool.engine.train import pictures

    def broken(*args, **kwargs):
        raise RuntimeError("no room on the canvas\nsecond line")

    monkeypatch.setattr(pictures, "write_train_batch", broken)
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_batch.jpg").write_bytes(b"an earlier run's")
    (out / "args.json").write_text('{"epochs": 1}')  # what makes the folder a train run's
    result = cli("train", "--data", digits, "--task", "classify", "--model", "lenet",
                 "--batch", "8", "--workers", "0", "--augment", "none", "--epochs", "1",
                 "--out", out, "--exist-ok")  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "not written" in line]
    assert warnings == ["warning: train_batch.jpg not written (RuntimeError: no room on the "
                        "canvas); training goes on"]  # fmt: skip
    assert not (out / "train_batch.jpg").exists()  # not the earlier run's either
    for name in ("labels.png", "confusion_matrix.png", "weights/best.pt", "results.csv"):
        assert (out / name).is_file(), name


def test_train_batch_takes_targets_still_on_the_training_device(tmp_path):
    """--augment-on device leaves the targets on the GPU (and a tensor may carry autograd):
    numpy reads neither, and train_batch.jpg was silently never written. Tensors that
    require grad stand in for CUDA ones here: both need .detach().cpu() first."""
    import torch

    from visiontool.engine.train.pictures import write_train_batch

    images = [torch.rand(3, 64, 64) for _ in range(2)]
    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0]], requires_grad=True)
    targets = [{"boxes": boxes, "labels": torch.tensor([1])}, {"boxes": boxes * 0.5,
               "labels": torch.tensor([0])}]  # fmt: skip
    write_train_batch(images, targets, ["a", "b"], tmp_path / "det.jpg")
    hot = torch.tensor([0.0, 1.0, 1.0], requires_grad=True)
    write_train_batch(images, [hot, hot], ["a", "b", "c"], tmp_path / "multi.jpg")
    for name in ("det.jpg", "multi.jpg"):
        assert picture(tmp_path / name).std() > 10
