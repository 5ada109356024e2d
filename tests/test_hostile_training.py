"""Hostile inputs to training, checkpoints and resume (issue 11): empty splits score -1 and never
lose an epoch, tampered checkpoints exit 3 in one line, resume is exact wherever it was
interrupted and needs no other flag, and a flag that conflicts with the resumed run is a
usage error."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from visiontool.data.synth import synth_classification, synth_detection
from visiontool.engine.train.trainer import Callbacks, TrainConfig, Trainer, run_train

WEIGHTS = Path(__file__).resolve().parents[1] / "visiontool" / "weights"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    synth_classification(out, n=40, imgsz=32, seed=3, kind="digits")
    return out


@pytest.fixture(scope="module")
def shapes_no_val_boxes(tmp_path_factory) -> Path:
    """A detection set whose val split has images but not one box."""
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=10, imgsz=96, fmt="coco", seed=5)
    path = out / "annotations" / "instances_val.json"
    gt = json.loads(path.read_text())
    gt["annotations"] = []
    path.write_text(json.dumps(gt))
    return out


def lenet(data: Path, out: Path | None, **overrides) -> TrainConfig:
    # default augmentation (random): resume must reproduce it too. On the CPU: bit-exact
    # resumes are a CPU property (CUDA's atomics-based kernels differ run to run)
    base = dict(data=str(data), task="classify", model="lenet", epochs=2, batch=8, lr=0.05,
                workers=0, out=out, device="cpu")  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
    assert worst == 0.0, f"weights differ by up to {worst}"


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def one_error_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- empty splits ---------------------------------------------------------------------------


def test_empty_splits_score_minus_one_as_pycocotools():
    from visiontool.metrics.classification import classification_metrics
    from visiontool.metrics.coco import evaluate_coco, results_from_arrays
    from visiontool.metrics.voc import evaluate_voc

    none4, none = np.zeros((0, 4)), np.zeros(0)
    box, flags = np.array([[0, 0, 5, 5]]), np.zeros(1, bool)
    dets = (np.array([1, 1]), np.array([[0, 0, 5, 5], [1, 1, 4, 4]]), np.array([0.9, 0.8]),
            np.array([0, 1]))  # fmt: skip
    voc_cases = {  # gt (image, boxes, labels, difficult) + dets -> per-class AP
        "no ground truth, detections": ((none, none4, none, np.zeros(0, bool)), dets, [-1] * 3),
        "nothing at all": ((none, none4, none, np.zeros(0, bool)), (none, none4, none, none),
                           [-1] * 3),
        "ground truth, no detections": ((np.array([1]), box, np.array([0]), flags),
                                        (none, none4, none, none), [0, -1, -1]),
        "only difficult ground truth": ((np.array([1]), box, np.array([0]), ~flags), dets,
                                        [-1] * 3),
    }  # fmt: skip
    for name, (gt, det, expected) in voc_cases.items():
        result = evaluate_voc(*gt, *det, num_classes=3)
        assert result.ap.tolist() == expected, name
        assert result.map == (-1.0 if max(expected) < 0 else 0.0), name

    cats = [{"id": i + 1, "name": str(i)} for i in range(3)]
    image = [{"id": 1, "width": 10, "height": 10, "file_name": "a.png"}]
    one_det = results_from_arrays(np.array([1]), np.array([[0, 0, 5, 5]]), np.array([0.9]),
                                  np.array([1]))  # fmt: skip
    for images, results in ((image, one_det), (image, []), ([], [])):
        coco = evaluate_coco({"images": images, "categories": cats, "annotations": []}, results)
        assert coco.stats["map"] == coco.stats["map50"] == -1.0
        assert [coco.class_ap(k) for k in range(3)] == [-1.0] * 3

    empty = classification_metrics(np.zeros((0, 3)), np.zeros(0, int), num_classes=3)
    assert (empty.top1, empty.top5) == (-1.0, -1.0)


@pytest.mark.slow
def test_training_with_a_val_split_without_boxes_finishes_and_scores_minus_one(
    cli, shapes_no_val_boxes, tmp_path
):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes_no_val_boxes, "--head", "frcnn", "--backbone",
                 "mobilenet_v3_small", "--imgsz", "96", "--epochs", "2", "--workers", "0",
                 "--fpn-channels", "32", "--box-head", "64", "--patience", "1",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    history = rows(out)
    assert len(history) == 2  # undefined scores never trigger early stopping
    assert all(float(row["val/map50"]) == -1.0 for row in history)
    assert "undefined" in result.output
    assert_same_weights(out / "weights/best.pt", out / "weights/last.pt")  # follows last
    ev = cli("eval", "--weights", out / "weights/best.pt", "--data", shapes_no_val_boxes,
             "--out", tmp_path / "ev", "--workers", "0")  # fmt: skip
    assert ev.exit_code == 0, ev.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["map"] == metrics["map50"] == metrics["voc_map50"] == -1.0


@pytest.mark.parametrize(
    "error, code",
    [(IndexError("index 0 is out of bounds"), 1), (RuntimeError("boom"), 1),
     (__import__("visiontool.errors").errors.DataError("val.json: broken"), 2)],
)  # fmt: skip
def test_a_failing_validation_never_loses_the_epoch(
    cli, digits, tmp_path, monkeypatch, error, code
):
    straight = run_train(lenet(digits, tmp_path / "straight", epochs=1))

    def broken(self):
        raise error

    monkeypatch.setattr(Trainer, "_validate", broken)
    out = tmp_path / "run"
    result = cli("train", "--task", "classify", "--model", "lenet", "--data", digits,
                 "--epochs", "1", "--batch", "8", "--lr", "0.05", "--workers", "0",
                 "--out", out)  # fmt: skip
    line = one_error_line(result, code, "validation after epoch 1 failed", "last.pt", "--resume")
    assert type(error).__name__ in line
    last = out / "weights" / "last.pt"
    saved = torch.load(last, weights_only=True)["train"]
    assert saved["epoch"] == 0 and saved["step"] == 4  # all 4 steps of the epoch are in it
    assert_same_weights(last, Path(straight.last))  # the epoch's trained weights
    monkeypatch.undo()
    result = cli("train", "--resume", last)  # re-runs only the validation
    assert result.exit_code == 0, result.output
    assert_same_weights(last, Path(straight.last))
    assert rows(out) == [{**r, "time_s": rows(out)[0]["time_s"],
                          "images_per_s": rows(out)[0]["images_per_s"]}
                         for r in rows(Path(straight.out))]  # fmt: skip


# --- tampered checkpoints -------------------------------------------------------------------


def _set(path: list[str], value):
    def edit(checkpoint):
        target = checkpoint
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return edit


LENET_TAMPERING = {
    "2 classes for 10 outputs": lambda c: c["model_info"].update(
        classes=["a", "b"], raw_classes=["a", "b"], category_ids=[0, 1]),
    "classes not matching raw_classes": _set(["model_info", "raw_classes"], list("abcdefghij")),
    "model_info missing": _set(["model_info"], KeyError),
    "model_info a list": _set(["model_info"], [1, 2]),
    "classes not strings": _set(["model_info", "classes"], list(range(10))),
    "classes a string": _set(["model_info", "classes"], "0123456789"),
    "input_size a string": _set(["model_info", "input_size"], "32"),
    "build not a dict": _set(["model_info", "build"], ["lenet"]),
    "name missing": _set(["model_info", "name"], KeyError),
    "task unknown": _set(["model_info", "task"], "segment"),
    "category_ids wrong length": _set(["model_info", "category_ids"], [0, 1]),
    "duplicate class": _set(["model_info", "classes"], ["0"] * 10),
    "build with a foreign option": lambda c: c["model_info"]["build"].update(colour=3),
    "state_dict missing": _set(["state_dict"], KeyError),
}  # fmt: skip
DETECTOR_TAMPERING = {
    "2 classes for 7 outputs": lambda c: c["model_info"].update(
        classes=["a", "b"], raw_classes=["__background__", "a", "b"], category_ids=[1, 2]),
    "2 classes, raw label space kept": lambda c: c["model_info"].update(
        classes=["a", "b"], category_ids=[1, 2]),
    "num_classes not a number": lambda c: c["model_info"]["build"].update(num_classes="7"),
}  # fmt: skip


@pytest.mark.parametrize(
    "source, edits",
    [("digits-lenet.pt", LENET_TAMPERING), ("shapes-frcnn.pt", DETECTOR_TAMPERING)],
)
def test_tampered_model_info_is_exit_3_in_one_line(cli, tmp_path, source, edits):
    from visiontool.errors import ModelLoadError
    from visiontool.models.factory import load_model

    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (48, 48), (120, 30, 200)).save(image)
    base = torch.load(WEIGHTS / source, weights_only=True)
    for i, (what, edit) in enumerate(edits.items()):
        checkpoint = copy.deepcopy(base)
        edit(checkpoint)
        path = tmp_path / f"tampered{i}.pt"
        torch.save(checkpoint, path)
        with pytest.raises(ModelLoadError, match=str(path)):
            load_model(weights=path)
        result = cli("detect", image, "--weights", path, "--out", tmp_path / f"o{i}",
                     "--workers", "0")  # fmt: skip
        assert result.exit_code == 3, (what, result.output)
        one_error_line(result, 3, str(path))


# --- resume ---------------------------------------------------------------------------------


def _interrupted(
    config: TrainConfig, *, at_step: int | None = None, after_epoch: int | None = None
):
    calls = {"n": 0}

    def on_step(info) -> None:
        calls["n"] += 1
        if calls["n"] == at_step:
            raise KeyboardInterrupt

    def on_epoch(row) -> None:
        if row["epoch"] == after_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(config, Callbacks(on_step=on_step, on_epoch=on_epoch))


@pytest.mark.parametrize(
    "where, resume_workers",
    [
        ({"at_step": 1}, 1),  # the case: step 1 of the first epoch; one worker
        pytest.param({"at_step": 1}, 0, marks=pytest.mark.slow),  # in the main process
        pytest.param({"at_step": 3}, 0, marks=pytest.mark.slow),  # mid first epoch
        pytest.param({"at_step": 7}, 1, marks=pytest.mark.slow),  # mid second epoch
        pytest.param({"after_epoch": 1}, 0, marks=pytest.mark.slow),  # between epochs
    ],
)
def test_resume_is_exact_wherever_it_was_interrupted(digits, tmp_path, where, resume_workers):
    straight = run_train(lenet(digits, tmp_path / "a"))
    _interrupted(lenet(digits, tmp_path / "b"), **where)
    last = tmp_path / "b" / "weights" / "last.pt"
    resumed = run_train(lenet(digits, None, resume=str(last), workers=resume_workers))
    assert Path(resumed.out) == tmp_path / "b"
    assert_same_weights(Path(straight.last), last)
    keep = ("epoch", "loss", "lr", "val/top1", "val/top5")
    assert [{k: r[k] for k in keep} for r in rows(tmp_path / "a")] == [
        {k: r[k] for k in keep} for r in rows(tmp_path / "b")
    ]


def test_augmentation_does_not_depend_on_the_worker_that_loads_a_sample(digits, tmp_path):
    """The cause of the inexact resume: per-worker RNG streams. Each sample now has its own."""
    from visiontool.engine.train.state import SeededSamples

    class Noisy:
        def __len__(self):
            return 6

        def __getitem__(self, index):
            return torch.rand(3), float(np.random.rand())

    samples = SeededSamples(Noisy(), seed=7)
    before = torch.get_rng_state()
    first = [samples[i] for i in range(6)]
    assert torch.equal(torch.get_rng_state(), before)  # the main stream is untouched
    again = [samples[i] for i in reversed(range(6))][::-1]
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again, strict=True))
    samples.epoch = 1
    assert not torch.equal(samples[0][0], first[0][0])  # a new epoch draws anew


@pytest.mark.slow
def test_tiny_detector_resume_is_exact(shapes_no_val_boxes, tmp_path):
    def config(out, **kw):
        return TrainConfig(data=str(shapes_no_val_boxes), head="frcnn",
                           backbone="mobilenet_v3_small", epochs=2, batch=4, imgsz=96,
                           workers=0, fpn_channels=32, box_head=64, out=out, device="cpu",
                           **kw)  # fmt: skip

    straight = run_train(config(tmp_path / "a"))
    _interrupted(config(tmp_path / "b"), at_step=1)
    last = tmp_path / "b" / "weights" / "last.pt"
    run_train(TrainConfig(resume=str(last), workers=1, device="cpu"))  # nothing else needed
    assert_same_weights(Path(straight.last), last)


def test_resume_needs_no_other_flag_and_refuses_conflicting_ones(cli, digits, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--task", "classify", "--model", "lenet", "--data", digits,
                 "--epochs", "1", "--workers", "0", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    last = out / "weights" / "last.pt"
    conflicts = {
        "--data": [tmp_path], "--task": ["detect"], "--model": ["resnet18"],
        "--head": ["frcnn"], "--out": [tmp_path / "elsewhere"], "--seed": ["3"],
        "--lr": ["0.5"], "--batch": ["2"], "--imgsz": ["64"], "--ema": [],
    }  # fmt: skip
    for flag, values in conflicts.items():
        result = cli("train", "--resume", last, flag, *values)
        one_error_line(result, 2, flag, "--resume")
        assert not (tmp_path / "elsewhere").exists()
    line = one_error_line(cli("train", "--resume", last, "--model", "resnet18"), 2)
    assert "lenet" in line  # names the recorded value
    one_error_line(cli("train", "--resume", last, "--epochs", "0"), 2, "--epochs")
    one_error_line(cli("train"), 2, "--data", "--resume")
    assert len(rows(out)) == 1

    # the same values as recorded, and what may change: accepted; --epochs 2 trains longer
    result = cli("train", "--resume", last, "--data", digits, "--model", "lenet", "--out", out,
                 "--device", "cpu", "--workers", "0", "--epochs", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in rows(out)] == ["1", "2"]
    result = cli("train", "--resume", last)  # finished: nothing to do, nothing broken
    assert result.exit_code == 0, result.output
    assert len(rows(out)) == 2
    one_error_line(cli("train", "--resume", last, "--epochs", "1"), 2, "already trained 2")


def test_tampered_or_foreign_resume_checkpoints_are_one_line(cli, digits, tmp_path):
    run_train(lenet(digits, tmp_path / "run", epochs=1))
    weights = tmp_path / "run" / "weights"
    base = torch.load(weights / "last.pt", weights_only=True)
    edits = {
        "no train state": _set(["train"], KeyError),
        "train state a list": _set(["train"], [1]),
        "epoch a string": _set(["train", "epoch"], "1"),
        "no rng": _set(["train", "rng"], KeyError),
        "no train_args": _set(["train_args"], KeyError),
        "lr a string": _set(["train_args", "lr"], "fast"),
        "bad model_info": _set(["model_info", "classes"], 5),
        "optimizer state from another model": _set(["train", "optimizer"], {"state": {},
                                                   "param_groups": []}),
    }  # fmt: skip
    for i, (what, edit) in enumerate(edits.items()):
        folder = tmp_path / f"t{i}" / "weights"
        folder.mkdir(parents=True)
        checkpoint = copy.deepcopy(base)
        edit(checkpoint)
        torch.save(checkpoint, folder / "last.pt")
        result = cli("train", "--resume", folder / "last.pt")
        assert result.exit_code == 3, (what, result.output)
        one_error_line(result, 3, "last.pt")
    one_error_line(cli("train", "--resume", weights / "best.pt"), 3, "best.pt")
    loose = tmp_path / "loose.pt"
    loose.write_bytes((weights / "last.pt").read_bytes())
    one_error_line(cli("train", "--resume", loose), 2, "weights/last.pt")


def test_every_recorded_option_type_passes_the_resume_check():
    """A run's recorded arguments (every TrainConfig field, --arch's KEY=VALUE dict included)
    pass the resume check: a run trained with --arch could not be resumed before."""
    import dataclasses

    from visiontool.engine.train.trainer import _recorded_problem

    config = TrainConfig(data="data/shapes", arch={"fc": 1024, "roi_op": "pool"},
                         returned_layers=[3], anchor_sizes=[32.0, 64.0])  # fmt: skip
    args = dataclasses.asdict(config)
    train = {"epoch": 4, "step": 1200, "bad_epochs": 0, "history": [], "rng": {},
             "scheduler": {}, "scaler": {}, "optimizer": {}}  # fmt: skip
    assert _recorded_problem({"train": train, "train_args": args}) is None
    args["arch"] = "fc=1024"  # a tampered type is still refused
    assert "'arch' has a wrong type" in _recorded_problem({"train": train, "train_args": args})


def test_persistent_workers_draw_each_epochs_augmentation(tmp_path):
    """Worker processes live across epochs (no re-fork): their copy of the data set keeps the
    epoch it was forked with, so the epoch travels in the sampler's keys."""
    from torch.utils.data import DataLoader

    from visiontool.engine.train.state import SeededSamples
    from visiontool.engine.train.trainer import ResumableSampler

    class Noisy:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.rand(2)

    samples = SeededSamples(Noisy(), seed=3)
    sampler = ResumableSampler(torch.utils.data.distributed.DistributedSampler(
        samples, num_replicas=1, rank=0, shuffle=False))  # fmt: skip
    loader = DataLoader(samples, sampler=sampler, num_workers=1, persistent_workers=True,
                        batch_size=None)  # fmt: skip
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        got = [item for item in loader]
        samples.epoch = epoch  # what the main process would draw for this epoch
        expected = [samples[i] for i in range(4)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), epoch
    assert not torch.equal(got[0], samples[(0, 0)])  # epochs differ


def test_a_checkpoint_from_a_machine_with_more_gpus_restores_the_gpus_present(monkeypatch):
    """The random state of 2 GPUs resumed where there is 1: GPU 0's is restored, the other is
    left (set_rng_state_all indexed past the GPUs present and the resume failed)."""
    from visiontool.engine.train.state import rng_state, set_rng_state

    state = rng_state()
    state["cuda"] = [
        torch.full((16,), 1, dtype=torch.uint8),
        torch.full((16,), 2, dtype=torch.uint8),
    ]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: restored.append((int(s[0]), i)))
    set_rng_state(state)
    assert restored == [(1, 0)]
