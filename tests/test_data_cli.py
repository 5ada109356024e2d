"""`visiontool data` commands through CliRunner: output, JSON and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from visiontool.cli.main import app
from visiontool.data.synth import synth_classification, synth_detection

runner = CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    synth_detection(root, n=6, imgsz=64, fmt="voc", seed=0)
    return root


def test_stats_json_is_one_document(shapes: Path, tmp_path: Path) -> None:
    plot = tmp_path / "hist.png"
    result = runner.invoke(app, ["data", "stats", str(shapes), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["images"] == 5 and stats["split"] == "train"
    assert sum(c["objects"] for c in stats["classes"]) == stats["objects"]
    assert set(stats["box"]) >= {"width", "height", "area", "aspect_ratio"}
    assert stats["box"]["width"]["min"] <= stats["box"]["width"]["median"]
    assert Image.open(plot).size[0] > 100


def test_stats_table(shapes: Path) -> None:
    result = runner.invoke(app, ["data", "stats", str(shapes), "--split", "val"])
    assert result.exit_code == 0 and "1 images" in result.output and "aspect_ratio" in result.output


def test_check_json(shapes: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(shapes), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] and [s["name"] for s in report["splits"]] == ["train", "val"]


@pytest.mark.parametrize("augment", ["none", "ssd"])
def test_show_writes_a_grid(shapes: Path, tmp_path: Path, augment: str) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["data", "show", str(shapes), "--n", "4", "--augment", augment, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (2 * 256 + 3 * 4, 2 * 256 + 3 * 4)


def test_show_classification_and_bad_preset(tmp_path: Path) -> None:
    synth_classification(tmp_path / "digits", n=10, imgsz=20, seed=0, kind="digits")
    out = tmp_path / "g.png"
    result = runner.invoke(app, ["data", "show", str(tmp_path / "digits"), "--out", str(out)])
    assert result.exit_code == 0 and out.is_file()
    result = runner.invoke(
        app, ["data", "show", str(tmp_path / "digits"), "--augment", "mosaic", "--out", str(out)]
    )
    assert result.exit_code == 2 and "--augment" in result.output and "'mosaic'" in result.output
    assert "frcnn, ssd, classify, multilabel, none" in result.output


def test_data_help_does_not_import_torch() -> None:
    code = (
        "import sys; from visiontool.cli import data; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
