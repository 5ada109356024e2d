"""The models this project trains and ships under weights/: listed, offline, verified, accurate."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from visiontool import registry
from visiontool.errors import ModelLoadError
from visiontool.models.shipped import WEIGHTS_ENV, read_manifest, sha256, verified_checkpoint

REPO = Path(__file__).resolve().parents[1]
MANIFEST = read_manifest(REPO / "weights")


def test_manifest_entries_are_complete_and_registered():
    names = {entry["name"] for entry in MANIFEST}
    assert {"digits-lenet", "shapes-frcnn"} <= names
    for entry in MANIFEST:
        for key in ("task", "architecture", "classes", "input_size", "data_recipe", "command",
                    "metric_val", "sha256"):  # fmt: skip
            assert entry.get(key), (entry["name"], key)
        path = REPO / "weights" / entry["file"]
        assert path.stat().st_size <= 20_000_000
        assert sha256(path) == entry["sha256"]
        assert registry.get("model", entry["name"]).meta["source"] == "visiontool"


def test_shipped_models_meet_their_targets():
    """Issue #5 targets: digits top-1 >= 0.98; shapes mAP50 >= 0.90 and mAP@[.5:.95] >= 0.60
    (the recorded numbers are checked against a fresh evaluation below)."""
    by_name = {entry["name"]: entry for entry in MANIFEST}
    assert by_name["digits-lenet"]["metric_val"]["top1"] >= 0.98
    shapes = by_name["shapes-frcnn"]["metric_val"]
    assert shapes["map50"] >= 0.90 and shapes["map"] >= 0.60


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes-frcnn", "digits-lenet"])
def test_manifest_metrics_reproduce_from_the_recorded_recipe(name, tmp_path):
    """Regenerate the val split with the manifest's own data recipe and score the shipped
    file with `visiontool eval`: the numbers must be the recorded ones."""
    import shlex

    from typer.testing import CliRunner

    from visiontool.cli.main import app

    entry = next(e for e in MANIFEST if e["name"] == name)
    recipe = shlex.split(entry["data_recipe"])[1:]  # drop the program name
    data = tmp_path / "data"
    recipe[recipe.index("--out") + 1] = str(data)
    runner = CliRunner()
    assert runner.invoke(app, [*recipe, "--quiet"]).exit_code == 0
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--model", name, "--data", str(data), "--out", str(out),
                                 "--no-plots", "--quiet", "--workers", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key, value in entry["metric_val"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key
    validated = _training_validation(name, data)
    for key, value in entry["metric_val"].items():
        assert validated[key] == pytest.approx(value, abs=1e-4), key


def _training_validation(name: str, data: Path) -> dict:
    """What the trainer's per-epoch validation reports for this model and data."""
    import torch

    from visiontool.data.datasets import open_dataset
    from visiontool.engine.train.distributed import DistInfo
    from visiontool.engine.train.setup import attach_transforms
    from visiontool.engine.train.trainer import TrainConfig
    from visiontool.engine.train.validate import validate_classifier, validate_detector
    from visiontool.models.loader import load_model

    loaded = load_model(name)
    task = loaded.info.task
    train, val = (open_dataset(data, split=s, task=task) for s in ("train", "val"))
    config = TrainConfig(data=str(data), task=task, model="frcnn" if task == "detect" else name)
    attach_transforms(config, train, val, loaded.info)
    validate = validate_detector if task == "detect" else validate_classifier
    return validate(loaded.module, val, info=loaded.info, device=torch.device("cpu"), batch=8,
                    workers=0, dist=DistInfo())  # fmt: skip


def test_digits_lenet_reads_fresh_digits_offline(cli, tmp_path):
    from visiontool.data.synth import synth_classification

    synth_classification(tmp_path / "d", n=100, imgsz=32, seed=99, kind="digits")
    out = tmp_path / "run"
    result = cli("detect", tmp_path / "d", "-r", "--model", "digits-lenet", "--workers", "0",
                 "--no-save-img", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    right = sum(Path(r["image"]).parent.name == r["classes"][0]["label"] for r in rows)
    assert len(rows) == 100 and right >= 90


def test_corrupt_shipped_file_is_refused(tmp_path, monkeypatch):
    entry = next(e for e in MANIFEST if e["name"] == "digits-lenet")
    shutil.copy(REPO / "weights" / entry["file"], tmp_path / entry["file"])
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert verified_checkpoint(entry) == tmp_path / entry["file"]
    with (tmp_path / entry["file"]).open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        verified_checkpoint(entry)
    (tmp_path / entry["file"]).unlink()
    with pytest.raises(ModelLoadError, match="are missing"):
        verified_checkpoint(entry)


@pytest.mark.slow
def test_make_demo_runs_the_shipped_detector():
    result = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [json.loads(x) for x in (REPO / "runs/demo/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(list((REPO / "examples").glob("*.jpg")))
    assert all(row["error"] is None for row in rows)
    assert sum(len(row["detections"]) for row in rows) >= len(rows)
    assert "results saved to runs/demo" in result.stdout


def test_weights_none_rebuilds_the_shipped_architecture_untrained():
    import torch

    from visiontool.models.loader import load_model

    trained = load_model("shapes-frcnn").module.state_dict()
    fresh = load_model("shapes-frcnn", "none")
    assert fresh.info.weights.startswith("none") and fresh.info.classes[0] == "circle"
    state = fresh.module.state_dict()
    shared = [k for k in trained if not k.endswith("num_batches_tracked")]
    assert all(state[k].shape == trained[k].shape for k in shared)
    assert not torch.equal(state["roi_heads.box_predictor.cls_score.weight"],
                           trained["roi_heads.box_predictor.cls_score.weight"])  # fmt: skip
