"""Hostile input to the data, anchors and export tools: every bad value is one `error:` line and
exit 2 (never a traceback), and no user file, data set file or shipped weights file is lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from visiontool.data.synth import synth_detection


def one_error_line(result, code: int = 2) -> str:
    """The result failed with `code` and said why in exactly one `error:` line."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output and "╭" not in result.output
    return errors[0]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small COCO set (train 8, val 2); tests copy it before changing it."""
    root = tmp_path_factory.mktemp("hostile-tools") / "data"
    synth_detection(root, n=10, imgsz=64, fmt="coco", seed=0)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


# --- 1. data stats --plot / data show --out never overwrite a file ---------------------------


@pytest.mark.parametrize("command", ["stats", "show"])
def test_data_picture_inside_the_data_set_is_refused(cli, shapes: Path, command: str) -> None:
    before = snapshot(shapes)
    option = "--plot" if command == "stats" else "--out"
    image = next((shapes / "images" / "train").iterdir())
    for target in (shapes / "annotations" / "instances_train.json", image, shapes / "new.png"):
        for extra in ((), ("--exist-ok",)):
            line = one_error_line(cli("data", command, shapes, option, target, *extra))
            assert "inside the data set" in line and option in line
    # a COCO json given as the data set: its root (images included) is protected too
    json_input = shapes / "annotations" / "instances_train.json"
    line = one_error_line(
        cli("data", command, json_input, option, shapes / "images" / "x.png", "--exist-ok")
    )
    assert "inside the data set" in line
    assert snapshot(shapes) == before


@pytest.mark.parametrize("command", ["stats", "show"])
def test_data_picture_output_checks(cli, shapes: Path, tmp_path: Path, command: str) -> None:
    option = "--plot" if command == "stats" else "--out"
    run = ("data", command, shapes, "--quiet") + (("--n", "2") if command == "show" else ())
    line = one_error_line(cli(*run, option, tmp_path))
    assert "is a folder" in line and ".tmp" not in line
    line = one_error_line(cli(*run, option, ""))
    assert "needs a file name" in line
    line = one_error_line(cli(*run, option, tmp_path / "x.txt"))
    assert "'.txt'" in line and ".png" in line
    assert not (tmp_path / "x.txt").exists()
    afile = tmp_path / "afile"
    afile.write_text("a user's file")
    line = one_error_line(cli(*run, option, afile / "x.png"))
    assert "is a file, not a folder" in line
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"a user's picture")
    line = one_error_line(cli(*run, option, mine))
    assert "exists" in line and "--exist-ok" in line
    assert mine.read_bytes() == b"a user's picture"
    replaced = cli(*run, option, mine, "--exist-ok")
    assert replaced.exit_code == 0, replaced.output
    assert mine.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine.png"]  # no temp files


def test_data_show_writes_the_other_raster_formats(cli, shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.jpg"
    result = cli("data", "show", shapes, "--n", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"


def test_data_show_default_out_is_never_inside_the_data_set(
    cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "set"
    shutil.copytree(shapes, copy)
    monkeypatch.chdir(copy)
    line = one_error_line(cli("data", "show", ".", "--n", "1"))
    assert "inside the data set" in line and not (copy / "runs").exists()


# --- 2. data check opens every image's header -----------------------------------------------


def test_data_check_reports_unreadable_images_and_wrong_sizes(
    cli, shapes: Path, tmp_path: Path
) -> None:
    root = tmp_path / "set"
    shutil.copytree(shapes, root)
    path = root / "annotations" / "instances_train.json"
    data = json.loads(path.read_text())
    names = [image["file_name"] for image in data["images"]]
    (root / "images" / "train" / names[0]).write_bytes(b"no image at all " * 40)
    data["images"][1].update(width=1000, height=1000)
    data["images"][2]["width"] = -1
    data["images"][3]["height"] = "x"
    path.write_text(json.dumps(data))
    result = cli("data", "check", root, "--max-issues", "0")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    text = "\n".join(errors)
    assert len(errors) == 4, result.output
    assert names[0] in text and "unreadable image" in text
    assert names[1] in text and "1000x1000" in text and "64x64" in text
    assert "width -1" in text and names[2] in text
    assert "height 'x'" in text and names[3] in text
    report = json.loads(cli("data", "check", root, "--json").stdout)
    assert report["errors"] == 4 and not report["ok"]
    assert cli("data", "check", shapes).exit_code == 0  # the untouched set still passes


def test_corrupt_image_is_named_when_data_show_hits_it(cli, shapes: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(shapes, root)
    for image in (root / "images" / "train").iterdir():
        image.write_bytes(b"garbage")
    line = one_error_line(cli("data", "show", root, "--n", "1", "--out", tmp_path / "g.png"))
    assert "images/train/" in line and "not an image" in line
    assert not (tmp_path / "g.png").exists()


# --- 3. data convert has no --exist-ok: its message does not offer one ------------------------


def test_convert_into_a_non_empty_folder_names_no_missing_option(
    cli, shapes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = one_error_line(cli("data", "convert", shapes, "--to", "yolo", "--out", out))
    assert "not empty" in line and "--exist-ok" not in line and "keep.txt" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


# --- 4. anchors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["prior", "--sizes", "0.5", "--ratios", "1e300", "--size", "64x64"],
        ["prior", "--sizes", "0.5", "--ratios", "1e-300", "--size", "64x64"],
        ["prior", "--sizes", "1e300", "--ratios", "1", "--size", "64x64"],
        ["grid", "--ratios", "1e300", "--size", "64x64"],
        ["grid", "--scales", "1e300", "--size", "64x64"],
    ],
)
def test_anchor_ratios_and_sizes_out_of_range(cli, tmp_path: Path, args: list[str]) -> None:
    line = one_error_line(cli("anchors", *args, "--out", tmp_path / "run"))
    assert "must lie in" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("gt", "message"),
    [
        ({"classes": ["a"], "boxes": [[0, "x", 0.1, 0.5, 0.5]]}, "must be numbers"),
        ({"classes": ["a"], "boxes": [[0, 0.1, 0.1, 0.5, None]]}, "must be numbers"),
        ({"classes": ["a"], "boxes": [[0, True, 0.1, 0.5, 0.5]]}, "must be numbers"),
        ({"classes": "ab", "boxes": [[0, 0.1, 0.1, 0.5, 0.5]]}, "list of class names"),
        ({"classes": [1, 2], "boxes": [[0, 0.1, 0.1, 0.5, 0.5]]}, "list of class names"),
        ({"classes": ["a", "a"], "boxes": [[0, 0.1, 0.1, 0.5, 0.5]]}, "twice"),
        ({"classes": ["a"], "boxes": [[0.5, 0.1, 0.1, 0.5, 0.5]]}, "whole number"),
        ({"boxes": [[[0], 0.1, 0.1, 0.5, 0.5]]}, "whole number"),
        ({"boxes": [[10**20, 0.1, 0.1, 0.5, 0.5]]}, "0..999"),
        ({"classes": ["a"], "boxes": [[3, 0.1, 0.1, 0.5, 0.5]]}, "outside 0..0"),
    ],
)
def test_anchors_label_validates_the_ground_truth_file(
    cli, tmp_path: Path, gt: dict, message: str
) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(gt))
    args = ("anchors", "label", "--gt", path, "--sizes", "0.5", "--ratios", "1")
    line = one_error_line(cli(*args, "--out", tmp_path / "run"))
    assert message in line and "g.json" in line
    assert not (tmp_path / "run").exists()


def test_anchors_label_reads_a_good_ground_truth_file(cli, tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"boxes": [{"class": "dog", "box": [0.1, 0.1, 0.5, 0.6]},
                                          ["cat", 0.4, 0.4, 0.9, 0.9]]}))  # fmt: skip
    result = cli("anchors", "label", "--gt", path, "--sizes", "0.5", "--ratios", "1",
                 "--size", "64x64", "--out", tmp_path / "run", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == ["dog", "cat"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--thr", "nan"], "--thr"),
        (["--thr", "inf"], "--thr"),
        (["--thr", "0"], "--thr"),
        (["--generations", "-1", "--algo", "evolve"], "--generations"),
        (["--iou", "nan"], "--iou"),
    ],
)
def test_anchors_fit_refuses_bad_numbers(
    cli, shapes: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    line = one_error_line(cli("anchors", "fit", "--data", shapes, *args, "--out", tmp_path / "r"))
    assert message in line
    assert not (tmp_path / "r").exists()


def test_anchors_fit_at_a_huge_imgsz_writes_whole_files(cli, shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("anchors", "fit", "--data", shapes, "--num", "2", "--imgsz", "100000000",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "anchors.json").read_text())["imgsz"] == 100000000
    from PIL import Image

    assert max(Image.open(out / "anchors.png").size) <= 4096


def test_anchors_fit_writes_nothing_when_drawing_fails(
    cli, shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visiontool.engine.anchors.show as show

    def broken(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(show, "fit_picture", broken)
    out = tmp_path / "run"
    one_error_line(cli("anchors", "fit", "--data", shapes, "--num", "2", "--out", out))
    assert not out.exists() or not list(out.iterdir())


# --- 5. export never overwrites the weights it loads, nor writes into the package -------------


@pytest.fixture
def weights_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped weights folder, used in place of the package's (the real shipped
    files are never a target in these tests)."""
    from visiontool.models.shipped import weights_dir

    copy = tmp_path / "weights"
    shutil.copytree(weights_dir(), copy)
    monkeypatch.setenv("VISIONTOOL_WEIGHTS_DIR", str(copy))
    return copy


def test_export_refuses_the_shipped_weights_file_it_loads(
    cli, weights_copy: Path, tmp_path: Path
) -> None:
    shipped = weights_copy / "shapes-tinyssd.pt"
    before = shipped.read_bytes()
    line = one_error_line(
        cli("export", "--model", "shapes-tinyssd", "--out", shipped, "--exist-ok")
    )
    assert "loaded from" in line
    link = tmp_path / "link.pt"
    link.symlink_to(shipped)
    line = one_error_line(cli("export", "--model", "shapes-tinyssd", "--out", link, "--exist-ok"))
    assert "loaded from" in line
    line = one_error_line(
        cli("export", "--model", "shapes-tinyssd", "--out", weights_copy / "new.onnx")
    )
    assert "shipped-weights folder" in line
    assert shipped.read_bytes() == before and not (weights_copy / "new.onnx").exists()


def test_export_refuses_its_weights_path_however_named(cli, weights_copy: Path, tmp_path: Path):
    mine = tmp_path / "mine.pt"
    shutil.copy(weights_copy / "shapes-tinyssd.pt", mine)
    before = mine.read_bytes()
    hard = tmp_path / "hard.pt"
    os.link(mine, hard)
    for out in (mine, hard, tmp_path / "." / "mine.pt"):
        line = one_error_line(cli("export", "--weights", mine, "--out", out, "--exist-ok"))
        assert "loaded from" in line
    assert mine.read_bytes() == before


def test_export_never_writes_into_the_installed_package() -> None:
    """The check itself, on the real package paths (nothing is written either way)."""
    import visiontool
    from visiontool.engine.export import ExportConfig, _check_out
    from visiontool.errors import ConfigError

    package = Path(visiontool.__file__).parent
    for out, message in (
        (package / "weights" / "shapes-tinyssd.pt", "loaded from"),
        (package / "weights" / "other.onnx", "installed visiontool package"),
        (package / "model.onnx", "installed visiontool package"),
    ):
        config = ExportConfig(model="shapes-tinyssd", out=out, exist_ok=True)
        with pytest.raises(ConfigError, match=message):
            _check_out(out, config)


def test_export_huge_imgsz_is_refused_before_the_model_loads(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visiontool.engine.predict.pipeline as pipeline

    def never(**kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(pipeline, "make_predictor", never)
    out = tmp_path / "m.onnx"
    line = one_error_line(
        cli("export", "--model", "shapes-tinyssd", "--imgsz", "100000", "--out", out)
    )
    assert "--imgsz 100000" in line and "memory" in line
    assert not out.exists()
