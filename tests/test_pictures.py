"""Pictures and plots: one drawing module with one palette, one plotting setup.

Every raster picture (detect's annotated copies, `data show`, the `anchors` pictures) is drawn
by `visiontool.io.draw`, so class k has `color(k)` in all of them; every chart is made by
`visiontool.io.plotting.figure`, the only module that imports matplotlib.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visiontool.io.draw import PALETTE, color

PACKAGE = Path(__file__).resolve().parents[1] / "visiontool"
# Modules that paint synthetic *input* images (data sets, benchmark images), not pictures of
# results: they may draw with Pillow/OpenCV directly.
MAKES_INPUTS = {"data/synth.py", "engine/bench.py"}


def sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in PACKAGE.rglob("*.py")}


def count_color(path: Path, rgb: tuple[int, int, int]) -> int:
    """Pixels of exactly this RGB colour (label tags are filled with the class colour)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return int((pixels == np.array(rgb, np.uint8)).all(axis=1).sum())


# ------------------------------------------------------------------------------ palette


def test_one_palette_and_drawing_module_in_the_source() -> None:
    drawing = re.compile(
        r"ImageDraw|draw_bounding_boxes|cv2\.(rectangle|putText|circle|line)\b|colorsys"
        r"|^PALETTE\s*=|^def (palette|color)\(",
        re.M,
    )
    offenders = sorted(
        name
        for name, text in sources().items()
        if name != "io/draw.py" and name not in MAKES_INPUTS and drawing.search(text)
    )
    assert offenders == [], f"draw through visiontool.io.draw, not directly: {offenders}"


def test_palette_is_stable_and_cycles() -> None:
    assert color(0) == PALETTE[0] and color(len(PALETTE) + 3) == color(3)
    assert len(set(PALETTE)) == len(PALETTE)


def detect_picture(tmp_path: Path, class_id: int) -> Path:
    from visiontool.io.writers import ImageWriter
    from visiontool.results import Detection, ImageResult

    image = torch.full((3, 200, 300), 90, dtype=torch.uint8)
    det = Detection(box=(40.0, 60.0, 200.0, 180.0), score=0.9, class_id=class_id, label="thing")
    result = ImageResult(image="a.png", rel="a.png", width=300, height=200, detections=[det])
    path = ImageWriter(tmp_path / f"det{class_id}").write(result, image)
    assert path is not None
    return path


class OneBoxDataset:
    """A tiny detection data set: one grey image with one box of class `class_id`."""

    def __init__(self, class_id: int) -> None:
        self.class_id = class_id
        self.classes = [f"c{k}" for k in range(class_id + 1)]
        self.transforms = None

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        image = tv_tensors.Image(torch.full((3, 64, 96), 90, dtype=torch.uint8))
        boxes = tv_tensors.BoundingBoxes([[10, 12, 60, 50]], format="XYXY", canvas_size=(64, 96))
        return image, {"boxes": boxes, "labels": torch.tensor([self.class_id])}


def show_picture(tmp_path: Path, class_id: int) -> Path:
    from visiontool.data.show import render_grid

    return render_grid(OneBoxDataset(class_id), tmp_path / f"show{class_id}.png", n=1)


def anchors_picture(tmp_path: Path, class_id: int) -> Path:
    from visiontool.engine.anchors.show import LabelConfig, label_view

    gt = tmp_path / f"gt{class_id}.json"
    classes = [f"c{k}" for k in range(class_id + 1)]
    gt.write_text(json.dumps({"classes": classes, "boxes": [[class_id, 0.2, 0.2, 0.7, 0.8]]}))
    config = LabelConfig(gt=gt, sizes=[0.5], ratios=[1.0], fmap=(4, 4), size=(128, 128),
                         out=tmp_path / f"anchors{class_id}")  # fmt: skip
    result = label_view(config)
    return Path(getattr(result, "picture", result.out))


@pytest.mark.parametrize("make", [detect_picture, show_picture, anchors_picture])
@pytest.mark.parametrize("class_id", [1, 3])
def test_class_colour_is_the_same_in_every_picture(tmp_path: Path, make, class_id: int) -> None:
    """A class's box and tag have `color(class_id)`, and no other class's colour shows up."""
    path = make(tmp_path, class_id)
    other = 2 if class_id != 2 else 4
    assert count_color(path, color(class_id)) > 100  # the filled label tag, at least
    assert count_color(path, color(other)) == 0


def test_fit_picture_colours_anchor_i_with_color_i(tmp_path: Path) -> None:
    from visiontool.engine.anchors.show import draw_fit

    path = draw_fit([(20, 30), (50, 40)], [(22, 28), (45, 45)], 128, tmp_path / "fit.png")
    assert count_color(path, color(0)) > 100 and count_color(path, color(1)) > 100
    assert count_color(path, color(2)) == 0


def test_tags_in_one_picture_do_not_cover_each_other() -> None:
    from visiontool.io.draw import blank, draw_boxes

    picture = blank(200, 200)
    boxes = [[50, 50, 150, 150], [52, 52, 140, 140], [54, 50, 130, 120]]  # corners together
    draw_boxes(picture, boxes, [color(0), color(1), color(2)], ["first", "second", "third"])
    for k in range(3):  # every tag's fill is still (mostly) visible
        assert (picture == np.array(color(k)[::-1], np.uint8)).all(axis=2).sum() > 100


def old_draw_detections(bgr, detections):
    """detect's drawing before the pictures moved onto shared helpers (the reference)."""
    import cv2

    height, width = bgr.shape[:2]
    thickness = max(1, round(min(height, width) / 320))
    scale = max(0.35, min(height, width) / 900)
    for det in detections:
        r, g, b = PALETTE[det.class_id % len(PALETTE)]
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(bgr, (x1, y1), (x2, y2), (b, g, r), thickness, cv2.LINE_AA)
        font, text_thickness = cv2.FONT_HERSHEY_SIMPLEX, max(1, thickness - 1)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), baseline = cv2.getTextSize(text, font, scale, text_thickness)
        pad = max(2, thickness)
        box_h = th + baseline + 2 * pad
        x = max(0, min(x1, bgr.shape[1] - tw - 2 * pad))
        top = y1 if y1 - box_h < 0 else y1 - box_h
        cv2.rectangle(bgr, (x, top), (x + tw + 2 * pad, top + box_h), (b, g, r), -1)
        ink = (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
        cv2.putText(bgr, text, (x + pad, top + pad + th), font, scale, ink, text_thickness,
                    cv2.LINE_AA)  # fmt: skip
    return bgr


@pytest.mark.parametrize("size", [(240, 320), (1080, 1920)])
def test_detect_picture_is_pixel_for_pixel_what_it_was(size: tuple[int, int]) -> None:
    """Moving the other pictures onto detect's helpers left detect's own output unchanged."""
    from visiontool.io.draw import draw_detections
    from visiontool.results import Detection

    rng = np.random.default_rng(0)
    height, width = size
    dets = []
    for k in range(12):
        x1, y1 = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
        x2, y2 = rng.uniform(x1 + 5, width), rng.uniform(y1 + 5, height)
        dets.append(Detection((x1, y1, x2, y2), float(rng.uniform()), k * 3, f"class{k}"))
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert (draw_detections(image.copy(), dets) == old_draw_detections(image.copy(), dets)).all()


# ------------------------------------------------------------------------------ plotting


def test_one_plotting_setup_in_the_source() -> None:
    """matplotlib is imported by io/plotting.py alone; no global backend switch, no pyplot."""
    importing = re.compile(r"^\s*(import matplotlib|from matplotlib)\b", re.M)
    users = sorted(name for name, text in sources().items() if importing.search(text))
    assert users == ["io/plotting.py"]
    switching = re.compile(r"^\s*matplotlib\.use\(|matplotlib\.pyplot|import pyplot", re.M)
    assert [name for name, text in sources().items() if switching.search(text)] == []


def test_plots_leave_matplotlib_global_state_alone(tmp_path: Path) -> None:
    """Plotting works headless without switching the process's backend or loading pyplot, and
    the shared style does not leak into the caller's rcParams."""
    code = f"""
import sys
import matplotlib
import numpy as np
grid_before = matplotlib.rcParams["axes.grid"]
from visiontool.engine.evaluate.plots import plot_confusion, plot_pr_curves
from visiontool.engine.train.log import append_results, plot_results
from pathlib import Path
out = Path({str(tmp_path)!r})
plot_confusion(np.array([[3, 1], [0, 2]]), ["a", "b"], out / "cm.png")
curve = (np.linspace(0, 1, 5), np.linspace(1, 0.5, 5))
plot_pr_curves({{"a": curve}}, out / "pr.png", ap={{"a": 0.7}})
append_results(out / "results.csv", {{"epoch": 1, "train/loss": 1.0, "val/map": 0.1}})
append_results(out / "results.csv", {{"epoch": 2, "train/loss": 0.5, "val/map": 0.2}})
plot_results(out / "results.csv", out)
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
assert matplotlib.rcParams["axes.grid"] == grid_before, "style leaked"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    for name in ("cm.png", "pr.png", "losses.png", "metrics.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_plot_writes_nothing(tmp_path: Path) -> None:
    from visiontool.io.plotting import figure

    with pytest.raises(RuntimeError), figure(tmp_path / "p.png") as (_, ax):
        ax.plot([0, 1], [0, 1])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
