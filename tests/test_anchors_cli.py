"""`visiontool anchors prior|grid|label|fit|check` through CliRunner: output, files, pictures.

prior, grid, label and fit write into a run folder (--out DIR, else runs/anchors/exp, exp2...)
under fixed names: anchors.png, grid.png, labels.png, anchors.json + anchors.png.

Conventions pinned here: sizes are WxH (`--size 640x480` = 640 wide; `--fmap 8x4` = 8 columns,
4 rows; `--at X,Y`), in options, output and JSON alike; a ratio is width/height (2 = wide).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from visiontool.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["anchors", *args])


CAPTION_MAX = 120  # px: the caption band under every anchors picture is at most this high


def assert_picture(path: Path, size: tuple[int, int] | None = None, min_colors: int = 3) -> None:
    """A real PNG with drawing on it: several colours, a fair share of non-background pixels.
    `size` (W, H) is the drawing's; the caption band adds a little height below it."""
    assert path.exists(), f"{path} not written"
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size[0] == size[0], image.size
            assert size[1] < image.size[1] <= size[1] + CAPTION_MAX, image.size
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colors = np.unique(pixels, axis=0)
    assert len(colors) >= min_colors
    background = np.bincount(np.unique(pixels, axis=0, return_inverse=True)[1].ravel()).max()
    assert len(pixels) - background > 500


def load_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_does_not_import_torch():
    code = (
        "import sys; from visiontool.cli.main import run\n"
        "try:\n    run(['anchors', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "prior" in done.stdout and "check" in done.stdout


# ---------------------------------------------------------------------------- prior


def test_prior_full_image_count_table_and_picture(tmp_path):
    out = tmp_path / "prior"
    result = invoke(
        "prior", "--size", "728x561", "--sizes", "0.75", "0.5", "0.25",
        "--ratios", "1", "2", "0.5", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2042040 anchors" in result.stdout
    assert "s=0.75" not in result.stdout  # labels belong in the picture, the table shows sizes
    assert "0.75" in result.stdout and "546.0" in result.stdout  # 0.75 * 728 px wide
    assert f"results saved to {out}" in result.stdout
    assert f"picture: {out / 'anchors.png'}" in result.stdout
    assert sorted(os.listdir(out)) == ["anchors.png"]
    assert_picture(out / "anchors.png", (728, 561))


def test_prior_json_at_cell_on_image_with_coarse_fmap(tmp_path):
    image = tmp_path / "img.png"
    Image.new("RGB", (80, 40), (20, 120, 20)).save(image)
    result = invoke(
        "prior", "--image", str(image), "--fmap", "4x2", "--sizes", "0.5,0.25",
        "--ratios", "1", "--at", "2,1", "--offset", "0", "--json", "--out", str(tmp_path / "p"),
    )  # fmt: skip
    doc = load_json(result)
    assert doc["out"] == str(tmp_path / "p") and doc["picture"] == str(tmp_path / "p/anchors.png")
    assert doc["count"] == 2 * 4 * 2 and doc["per_location"] == 2
    # WxH everywhere: the 80 wide, 40 high image; 4 columns x 2 rows; column 2, row 1
    assert doc["image_size"] == [80, 40] and doc["fmap"] == [4, 2] and doc["at"] == [2, 1]
    # centre (2/4, 1/2) with offset 0; size 0.5 -> half extent 0.25
    assert doc["anchors"][0]["box"] == [0.25, 0.25, 0.75, 0.75]
    assert doc["anchors"][1]["box_px"] == [30.0, 15.0, 50.0, 25.0]
    assert_picture(tmp_path / "p/anchors.png", (512, 256))  # small images are scaled up


def test_prior_coarse_map_draws_every_anchor(tmp_path):
    out = tmp_path / "all"
    doc = load_json(
        invoke("prior", "--size", "64x64", "--fmap", "3x3", "--sizes", "0.3", "--ratios", "1", "2",
               "--json", "--out", str(out))
    )  # fmt: skip
    assert doc["mode"] == "all" and doc["at"] is None and doc["count"] == 18
    assert_picture(out / "anchors.png")


def test_prior_usage_errors(tmp_path):
    result = invoke("prior", "--size", "10x10", "--sizes", "0.5", "--ratios", "1", "--at", "20,0")
    assert result.exit_code == 2 and "outside the 10x10 feature map" in result.output
    result = invoke("prior", "--size", "10x10", "--sizes", "big", "--ratios", "1")
    assert result.exit_code == 2 and "--sizes" in result.output
    result = invoke("prior", "--sizes", "0.5", "--ratios", "1")
    assert result.exit_code == 2 and "--image IMG or --size WxH" in result.output
    result = invoke(
        "prior", "--image", str(tmp_path / "nope.jpg"), "--sizes", "0.5", "--ratios", "1"
    )
    assert result.exit_code == 2 and "nope.jpg" in result.output
    assert "Traceback" not in result.output
    # --out names a folder now: the old file-valued form is a clear usage error, nothing written
    old = tmp_path / "anchors.png"
    result = invoke(
        "prior", "--size", "10x10", "--sizes", "0.5", "--ratios", "1", "--out", str(old)
    )
    assert result.exit_code == 2 and "--out names a folder" in result.output
    assert not old.exists()


def test_default_run_folders_never_write_into_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("--size", "32x32", "--sizes", "0.5", "--ratios", "1")
    first = invoke("prior", *args)
    assert first.exit_code == 0, first.output
    second = load_json(invoke("prior", *args, "--json"))
    runs = Path("runs") / "anchors"
    assert f"results saved to {runs / 'exp'}\n" in first.stdout
    assert second["out"] == str(runs / "exp2")
    assert second["picture"] == str(runs / "exp2" / "anchors.png")
    assert_picture(tmp_path / runs / "exp" / "anchors.png")
    assert_picture(tmp_path / runs / "exp2" / "anchors.png")
    # a failed run claims no folder; --exist-ok reuses exp; every command has its fixed name
    assert invoke("prior", *args, "--at", "99,99").exit_code == 2
    grid = load_json(invoke("grid", "--size", "64x64", "--json"))
    assert grid["out"] == str(runs / "exp3") and grid["picture"].endswith("grid.png")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"boxes": [[0, 0.1, 0.1, 0.6, 0.6]]}))
    label = invoke("label", "--gt", str(gt), "--size", "16x16", "--fmap", "2x2",
                   "--sizes", "0.5", "--ratios", "1", "--exist-ok")  # fmt: skip
    assert label.exit_code == 0, label.output
    assert sorted(os.listdir(runs / "exp")) == ["anchors.png", "labels.png"]
    assert sorted(os.listdir(runs)) == ["exp", "exp2", "exp3"]
    assert sorted(os.listdir(tmp_path)) == ["gt.json", "runs"]


# ---------------------------------------------------------------------------- grid


def test_grid_counts_hand_case(tmp_path):
    out = tmp_path / "grid"
    doc = load_json(
        invoke("grid", "--size", "48x32", "--stride", "16", "--scales", "1", "2", "--ratios", "1",
               "--json", "--out", str(out))
    )  # fmt: skip
    # 3x2 (WxH) cells x 2 shapes; every 16x16 anchor inside, every 32x32 one crosses the border
    assert doc["count"] == 12 and doc["inside"] == 6
    assert doc["image_size"] == [48, 32] and doc["fmap"] == [3, 2]
    assert [s["inside"] for s in doc["shapes"]] == [6, 0]
    assert doc["shapes"][1]["w"] == 32.0
    assert doc["out"] == str(out) and doc["picture"] == str(out / "grid.png")
    assert_picture(out / "grid.png", (512, 341))


def test_grid_faster_rcnn_defaults(tmp_path):
    out = tmp_path / "g"
    result = invoke("grid", "--size", "1000x600", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "21546 anchors = 63x38 (WxH) cells x 9" in result.stdout
    assert "fully inside" in result.stdout and f"results saved to {out}" in result.stdout
    assert_picture(out / "grid.png", (1000, 600))


def test_grid_model_shows_the_classic_models_own_anchors(tmp_path):
    """`anchors grid --model frcnn-vgg16` reads stride, scales and ratios from the model: the
    paper's grid, exactly the defaults; a multi-level model and conflicting flags are refused."""
    runs = {}
    for name, extra in (("model", ["--model", "frcnn-vgg16"]), ("defaults", [])):
        result = invoke("grid", "--size", "640x480", "--json", "--out", str(tmp_path / name),
                        *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    for key in ("fmap", "per_location", "count", "inside", "shapes"):
        assert runs["model"][key] == runs["defaults"][key], key
    assert [s["w"] for s in runs["model"]["shapes"][:3]] == [90.51, 128.0, 181.02]
    clash = invoke("grid", "--size", "640x480", "--model", "frcnn-vgg16", "--stride", "8",
                   "--out", str(tmp_path / "x"))  # fmt: skip
    assert clash.exit_code == 2 and "--stride" in clash.output
    levels = invoke("grid", "--size", "640x480", "--model", "retinanet", "--out",
                    str(tmp_path / "y"))  # fmt: skip
    assert levels.exit_code == 2 and "anchors check" in levels.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------------------- label

D2L_ANCHORS = [
    [0, 0.1, 0.2, 0.3],
    [0.15, 0.2, 0.4, 0.4],
    [0.63, 0.05, 0.88, 0.98],
    [0.66, 0.45, 0.8, 0.8],
    [0.57, 0.3, 0.92, 0.9],
]


def write_gt(tmp_path: Path) -> Path:
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "classes": ["dog", "cat"],
                "boxes": [
                    [0, 0.1, 0.08, 0.52, 0.92],
                    {"class": "cat", "box": [0.55, 0.2, 0.9, 0.88]},
                ],
            }
        )
    )
    return gt


def test_label_with_anchor_file_table_json_and_picture(tmp_path):
    gt = write_gt(tmp_path)
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps({"anchors": D2L_ANCHORS}))
    out = tmp_path / "labels"
    result = invoke("label", "--gt", str(gt), "--anchors", str(anchors), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "3 of 5 anchors assigned (dog: 1, cat: 2)" in result.stdout
    assert f"results saved to {out}" in result.stdout
    assert_picture(out / "labels.png", (512, 512))
    doc = load_json(
        invoke("label", "--gt", str(gt), "--anchors", str(anchors), "--all", "--json",
               "--out", str(out), "--exist-ok")  # an existing --out needs --exist-ok
    )  # fmt: skip
    rows = doc["rows"]
    assert [r["label"] for r in rows] == [0, 1, 2, 0, 2]
    assert [r["class"] for r in rows] == ["background", "dog", "cat", "background", "cat"]
    assert rows[0]["offsets"] == [0, 0, 0, 0]
    assert rows[1]["offsets"][:2] == pytest.approx([1.4, 10.0], abs=0.01)


def test_label_with_prior_options_on_image(tmp_path):
    gt = write_gt(tmp_path)
    image = tmp_path / "img.jpg"
    Image.new("RGB", (728, 561), (200, 180, 160)).save(image)
    out = tmp_path / "l"
    doc = load_json(
        invoke("label", "--gt", str(gt), "--image", str(image), "--fmap", "4x4",
               "--sizes", "0.75", "0.5", "0.25", "--ratios", "1", "2", "0.5", "--json",
               "--out", str(out))
    )  # fmt: skip
    assert doc["count"] == 80 and doc["assigned"] >= 2
    assert {r["class"] for r in doc["rows"]} == {"dog", "cat"}
    assert doc["out"] == str(out) and doc["picture"] == str(out / "labels.png")
    assert_picture(out / "labels.png", (728, 561))


def test_label_bad_inputs(tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text(json.dumps({"boxes": [[0, 0.5, 0.5, 0.2, 0.9]]}))
    result = invoke("label", "--gt", str(bad), "--sizes", "0.5", "--ratios", "1", "--fmap", "2x2")
    assert result.exit_code == 2 and "gt.json: box 0" in result.output
    assert "Traceback" not in result.output
    good = write_gt(tmp_path)
    result = invoke("label", "--gt", str(good))
    assert result.exit_code == 2 and "--anchors FILE" in result.output
    anchors = tmp_path / "anchors.json"
    anchors.write_text(json.dumps({"anchors": D2L_ANCHORS}))
    both = invoke("label", "--gt", str(good), "--anchors", str(anchors), "--sizes", "0.5",
                  "--out", str(tmp_path / "both"))  # fmt: skip
    assert both.exit_code == 2 and "pass one or the other" in both.output  # the file won
    assert not (tmp_path / "both").exists()


def test_label_large_assignment_prints_a_summary_and_draws_a_sample(tmp_path):
    """One anchor shape per pixel of a 128x96 canvas (no --fmap): thousands of positives give
    20 table rows and a count, and a picture of at most 50 anchors, not a solid block."""
    gt = write_gt(tmp_path)
    out = tmp_path / "big"
    args = ["label", "--gt", str(gt), "--size", "128x96", "--sizes", "0.5", "--ratios", "1"]
    result = invoke(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    doc = load_json(invoke(*args, "--json", "--out", str(tmp_path / "big_json")))
    assert doc["count"] == 96 * 128
    assert doc["assigned"] == len(doc["rows"]) > 1000  # --json keeps every row
    assert doc["drawn"] == 50
    table_rows = [line for line in result.stdout.splitlines() if line.split()[:1] and
                  line.split()[0].isdigit() and len(line.split()) >= 8]  # fmt: skip
    assert len(table_rows) == 20
    assert f"{doc['assigned'] - 20:,} more rows" in result.stdout
    assert "50 of them drawn" in result.stdout
    with Image.open(out / "labels.png") as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    canvas = (pixels == np.array([40, 40, 40], np.uint8)).all(axis=1).mean()
    assert canvas > 0.3  # most of the canvas still shows between the drawn anchors


def test_label_reads_the_anchors_json_fit_writes(tmp_path):
    from visiontool.io.anchors_file import anchors_document, write_anchors_json

    gt = write_gt(tmp_path)
    fitted = write_anchors_json(
        tmp_path / "fit.json",
        anchors_document(np.array([[64.0, 96.0], [256.0, 448.0]]), imgsz=512),
    )
    doc = load_json(
        invoke("label", "--gt", str(gt), "--anchors", str(fitted), "--fmap", "2x2", "--all",
               "--json", "--out", str(tmp_path / "fit_label"))
    )  # fmt: skip
    assert doc["count"] == 2 * 2 * 2  # K shapes on every cell of the 2x2 map
    boxes = [r["box"] for r in doc["rows"]]
    # cell (0, 0) centred at (0.25, 0.25): the 64x96 shape at imgsz 512 is 0.125 x 0.1875
    assert boxes[0] == pytest.approx([0.1875, 0.15625, 0.3125, 0.34375], abs=1e-4)
    assert boxes[1] == pytest.approx([0.0, -0.1875, 0.5, 0.6875], abs=1e-4)
    assert doc["assigned"] >= 2
    default = load_json(
        invoke("label", "--gt", str(gt), "--anchors", str(fitted), "--size", "128x64",
               "--json", "--out", str(tmp_path / "fit_default"))
    )  # fmt: skip
    assert default["count"] == 8 * 4 * 2  # without --fmap: one cell per 16 canvas pixels


# ---------------------------------------------------------------------------- fit / check


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from visiontool.data.synth import synth_detection

    root = tmp_path_factory.mktemp("anchors_data") / "ds"
    synth_detection(root, n=16, imgsz=128, fmt="coco", seed=0)
    return root


def test_fit_writes_anchors_json_and_picture(tmp_path, dataset):
    from visiontool.io.anchors_file import read_anchors_json

    out = tmp_path / "fit"
    result = invoke(
        "fit", "--data", str(dataset), "--num", "3", "--imgsz", "256", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert "mean IoU" in result.stdout and "best possible recall" in result.stdout
    assert f"wrote {out / 'anchors.json'} and {out / 'anchors.png'}" in result.stdout
    assert f"results saved to {out}" in result.stdout
    assert sorted(os.listdir(out)) == ["anchors.json", "anchors.png"]
    spec = read_anchors_json(out / "anchors.json")
    assert spec["num"] == 3 and spec["imgsz"] == 256 and len(spec["sizes"]) == 3
    areas = [w * h for w, h in spec["wh"]]
    assert areas == sorted(areas)
    assert_picture(out / "anchors.png")
    doc = load_json(
        invoke("fit", "--data", str(dataset), "--num", "3", "--algo", "evolve",
               "--generations", "50", "--json", "--out", str(tmp_path / "a2"))
    )  # fmt: skip
    assert doc["algo"] == "evolve" and doc["stats"]["mean_iou"] >= doc["kmeans_stats"]["mean_iou"]
    assert 0 < doc["bpr"] <= 1 and doc["anchors_per_box"] > 0
    assert doc["out"] == str(tmp_path / "a2")
    assert doc["json"] == str(tmp_path / "a2" / "anchors.json")
    assert doc["picture"] == str(tmp_path / "a2" / "anchors.png")
    assert read_anchors_json(doc["json"])["wh"] == doc["wh"]


def test_fit_default_folder_and_default_num_feeds_five_levels(tmp_path, dataset, monkeypatch):
    """`anchors fit` with its default --num 9 goes to runs/anchors/exp and its anchors.json
    spreads over the 5 levels of a ResNet FPN (and 3 and 6) with equal counts per level."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from visiontool.io.anchors_file import anchors_for_levels

    monkeypatch.chdir(tmp_path)
    result = invoke("fit", "--data", str(dataset), "--imgsz", "256")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "anchors" / "exp"
    assert sorted(os.listdir(folder)) == ["anchors.json", "anchors.png"]
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    for levels in (3, 5, 6):
        sizes, ratios = anchors_for_levels(folder / "anchors.json", levels, imgsz=512)
        counts = AnchorGenerator(sizes, ratios).num_anchors_per_location()
        assert counts == [-(-9 // levels)] * levels


def test_fit_errors(tmp_path, dataset):
    result = invoke("fit", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "missing" in result.output
    result = invoke("fit", "--data", str(dataset), "--algo", "magic", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "--algo" in result.output
    result = invoke("fit", "--data", str(dataset), "--num", "5000", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "lower --num" in result.output
    assert not (tmp_path / "a").exists()
    result = invoke("fit", "--data", str(dataset), "--out", str(tmp_path / "anchors.json"))
    assert result.exit_code == 2 and "--out names a folder" in result.output
    assert not (tmp_path / "anchors.json").exists()


def test_check_device_defaults_to_auto():
    import typer

    from visiontool.engine.anchors.check import CheckConfig

    command = typer.main.get_command(app).commands["anchors"].commands["check"]
    device = next(p for p in command.params if p.name == "device")
    assert device.default == "auto"
    assert CheckConfig(model="m", data=Path("d")).device == "auto"


def test_check_frcnn_mobile_recall_buckets(dataset):
    doc = load_json(
        invoke("check", "--model", "frcnn-mobile-320", "--data", str(dataset), "--json")
    )
    assert doc["generator"] == "frcnn anchors"
    assert [b["name"] for b in doc["buckets"]] == ["small", "medium", "large"]
    assert sum(b["boxes"] for b in doc["buckets"]) == doc["boxes"] == doc["overall"]["boxes"] > 0
    for bucket in [*doc["buckets"], doc["overall"]]:
        assert 0 <= bucket["recall_70"] <= bucket["recall_50"] <= 1
    assert doc["input_sizes"][0]["image"] == [128, 128]  # [W, H]
    assert doc["input_sizes"][0]["input"] == [320, 320]
    bad = [b for b in doc["buckets"] if b["boxes"] and b["recall_50"] < 0.9]
    assert all(b["hint"] for b in bad) and len(doc["hints"]) == len(bad)
    result = invoke("check", "--model", "frcnn-mobile-320", "--data", str(dataset), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "recall@0.5" in result.stdout and "on 3 images" in result.stdout


def test_check_takes_a_trained_checkpoint(dataset):
    shipped = Path(__file__).resolve().parents[1] / "visiontool" / "weights" / "shapes-frcnn.pt"
    doc = load_json(invoke("check", "--weights", str(shipped), "--data", str(dataset), "--json"))
    assert doc["model"] == "shapes-frcnn" and doc["boxes"] > 0
    assert doc["generator"].endswith("anchors") and 0 <= doc["overall"]["recall_50"] <= 1
    result = invoke("check", "--data", str(dataset))
    assert result.exit_code == 2 and "--weights PATH" in result.output


def test_check_ssdlite_and_non_detector(dataset):
    doc = load_json(invoke("check", "--model", "ssdlite", "--data", str(dataset), "--json"))
    assert doc["generator"] == "ssdlite anchors" and doc["boxes"] > 0
    assert doc["input_sizes"][0]["anchors"] == 3234
    result = invoke("check", "--model", "resnet18", "--data", str(dataset))
    assert result.exit_code == 2 and "no anchor generator" in result.output


def test_check_records_hand_case():
    """One box that equals an anchor exactly: recall 1 at both IoUs; a thin one: recall 0."""
    from functools import partial
    from types import SimpleNamespace

    import torch
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from visiontool.engine.anchors.check import check_records
    from visiontool.models.heads.torchvision_parts import image_anchors

    class Toy(torch.nn.Module):  # the parts of a torchvision detector anchors depend on
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 1, 16, stride=16)
            self.transform = GeneralizedRCNNTransform(64, 64, [0.0] * 3, [1.0] * 3)
            self.anchor_generator = AnchorGenerator(((16,),), ((1.0,),))

    # 64x64 image -> 4x4 cells of stride 16; torchvision centres anchors on cell corners:
    # 16x16 anchors at [16k - 8, 16j - 8, 16k + 8, 16j + 8]
    record = SimpleNamespace(
        height=64,
        width=64,
        boxes=np.array([[8, 8, 24, 24], [0, 0, 64, 2]], np.float32),
        iscrowd=np.zeros(2, bool),
        box_area=lambda: np.array([256.0, 128.0], np.float32),
    )
    result = check_records(partial(image_anchors, Toy()), [record])
    assert result.overall.boxes == 2
    assert result.overall.recall_50 == 0.5 and result.overall.recall_70 == 0.5
    small = result.buckets[0]
    assert small.boxes == 2 and small.hint  # half of the small boxes are missed


# ---------------------------------------------------------------------------- conventions
# Sizes WxH (x first) and ratios width/height (2 = wide), in every subcommand alike.


def test_size_is_width_by_height_and_ratio_2_is_wide(tmp_path):
    doc = load_json(
        invoke("prior", "--size", "64x32", "--fmap", "4x2", "--sizes", "0.5", "--ratios", "2",
               "--at", "3,0", "--json", "--out", str(tmp_path / "p"))
    )  # fmt: skip
    assert doc["image_size"] == [64, 32] and doc["fmap"] == [4, 2] and doc["at"] == [3, 0]
    (anchor,) = doc["anchors"]
    assert anchor["w"] == pytest.approx(2 * anchor["h"])  # w/h = 2 in normalized units
    x1, y1, x2, y2 = anchor["box_px"]
    assert (x1 + x2) / 2 == pytest.approx(56.0, abs=0.1)  # column 3 of 4 across 64 px
    assert (y1 + y2) / 2 == pytest.approx(8.0, abs=0.1)  # row 0 of 2 down 32 px
    assert_picture(tmp_path / "p" / "anchors.png", (512, 256))  # 64 wide, 32 high, scaled up
    result = invoke("prior", "--size", "64x32", "--fmap", "4x2", "--sizes", "0.5",
                    "--ratios", "1", "--at", "0,3", "--out", str(tmp_path / "bad"))  # fmt: skip
    assert result.exit_code == 2 and "outside the 4x2 feature map" in result.output
    result = invoke("prior", "--size", "64x32", "--fmap", "0x2", "--sizes", "0.5", "--ratios", "1")
    assert result.exit_code == 2 and "--fmap 0x2" in result.output
    grid = load_json(
        invoke("grid", "--size", "64x32", "--scales", "2", "--ratios", "2", "--json",
               "--out", str(tmp_path / "g"))
    )  # fmt: skip
    assert grid["image_size"] == [64, 32] and grid["fmap"] == [4, 2]
    (shape,) = grid["shapes"]
    assert shape["w"] == pytest.approx(2 * shape["h"], abs=0.01)


def help_text(*args: str) -> str:
    """--help as one line of words (rich's box borders and line wrapping removed)."""
    output = runner.invoke(app, [*args, "--help"]).output
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def test_help_says_wxh_and_width_over_height():
    for command in ("prior", "grid", "label"):
        text = help_text("anchors", command)
        assert "width/height (2 = wide)" in text and "WxH" in text and "HxW" not in text
    assert "X,Y (column, row)" in help_text("anchors", "prior")
    assert "width/height (2 = wide)" in help_text("anchors", "fit")
    train = help_text("train")
    assert "Anchor ratios width/height (2 = wide)" in train and "height/width" not in train


def test_label_fit_file_on_a_wide_feature_map_is_x_first(tmp_path):
    from visiontool.io.anchors_file import anchors_document, write_anchors_json

    fitted = write_anchors_json(
        tmp_path / "fit.json", anchors_document(np.array([[64.0, 64.0]]), imgsz=512)
    )
    doc = load_json(
        invoke("label", "--gt", str(write_gt(tmp_path)), "--anchors", str(fitted),
               "--fmap", "4x2", "--all", "--json", "--out", str(tmp_path / "l"))
    )  # fmt: skip
    assert doc["count"] == 4 * 2
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in (r["box"] for r in doc["rows"])]
    assert centres[:2] == [pytest.approx((0.125, 0.25)), pytest.approx((0.375, 0.25))]
    assert centres[4] == pytest.approx((0.125, 0.75))  # 4 columns, then the second row


@pytest.fixture(scope="module")
def elongated(tmp_path_factory) -> Path:
    """A COCO set with two box shapes: 80x20 (wide, w/h 4) and 15x60 (tall, w/h 0.25)."""
    root = tmp_path_factory.mktemp("elongated")
    (root / "coco").mkdir()
    images, annotations = [], []
    for i in range(6):
        Image.new("RGB", (200, 200)).save(root / "coco" / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        for j, bbox in enumerate(([10, 10, 80, 20], [100, 50, 15, 60])):
            annotations.append({"id": 2 * i + j + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
    spec = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
    (root / "coco.json").write_text(json.dumps(spec))
    return root / "coco.json"


def test_fit_prints_and_writes_ratios_as_width_over_height(tmp_path, elongated):
    out = tmp_path / "fit"
    result = invoke("fit", "--data", str(elongated), "--num", "2", "--imgsz", "200",
                    "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ratio w/h" in result.stdout
    rows = [
        line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["0"], ["1"])
    ]
    printed = {(float(w), float(h)): float(r) for _, w, h, _, r in rows}
    assert printed == {(15.0, 60.0): 0.25, (80.0, 20.0): 4.0}
    spec = json.loads((out / "anchors.json").read_text())
    assert spec["wh"] == [[15.0, 60.0], [80.0, 20.0]] and spec["ratios"] == [[0.25], [4.0]]


def assert_legend_and_caption(path: Path, height: int) -> None:
    """A legend tag in color(0) in the top-left corner and white caption text on the black
    band below the `height` px drawing."""
    from visiontool.io.draw import color

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    corner = pixels[:40, :160].reshape(-1, 3)
    assert (corner == np.array(color(0), np.uint8)).all(axis=1).sum() > 200
    band = pixels[height:].reshape(-1, 3)
    assert len(band) and (band == 0).all(axis=1).mean() > 0.7  # black
    assert (band > 200).all(axis=1).sum() > 100  # white text


def test_every_picture_has_a_legend_and_a_caption(tmp_path, elongated):
    """The bug: `prior --fmap 4x4` drew every anchor with no key to sizes and ratios."""
    out = tmp_path / "p"
    assert invoke("prior", "--size", "256x256", "--fmap", "4x4", "--sizes", "0.3", "0.15",
                  "--ratios", "1", "2", "--out", str(out)).exit_code == 0  # fmt: skip
    assert_legend_and_caption(out / "anchors.png", 512)
    assert invoke("grid", "--size", "64x64", "--out", str(tmp_path / "g")).exit_code == 0
    assert_legend_and_caption(tmp_path / "g" / "grid.png", 512)
    fit = tmp_path / "f"
    assert invoke("fit", "--data", str(elongated), "--num", "2", "--imgsz", "200",
                  "--out", str(fit)).exit_code == 0  # fmt: skip
    assert_legend_and_caption(fit / "anchors.png", 512)
    label = tmp_path / "l"
    gt = write_gt(tmp_path)
    assert invoke("label", "--gt", str(gt), "--size", "64x64", "--fmap", "2x2", "--sizes", "0.5",
                  "--ratios", "1", "--out", str(label)).exit_code == 0  # fmt: skip
    with Image.open(label / "labels.png") as image:
        assert image.size[0] == 512 and image.size[1] > 512  # a caption band below
        band = np.asarray(image.convert("RGB"))[512:].reshape(-1, 3)
    assert (band > 200).all(axis=1).sum() > 100


def test_check_hint_speaks_width_over_height():
    from visiontool.engine.anchors.check import BucketRecall, coverage_hint

    tall = np.array([[0, 0, 20, 100], [50, 50, 70, 150]], dtype=np.float32)  # w/h 0.2
    shapes = np.array([[50.0, 50.0], [40.0, 60.0]])  # w/h 1 and 0.67
    hint = coverage_hint("medium", BucketRecall("medium", 2, 0.0, 0.0, 0.1), tall, shapes)
    assert "median width/height 0.20" in hint and "w/h (0.67..1.00)" in hint
