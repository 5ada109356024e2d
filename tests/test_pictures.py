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
MAKES_INPUTS = {"data/synth.py", "engine/benchmark/pipeline.py"}


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


def crowded(height: int, width: int, n: int = 12, seed: int = 0):
    """`n` detections with their top-left corners bunched together and near every edge."""
    from visiontool.results import Detection

    rng = np.random.default_rng(seed)
    dets = []
    for k in range(n):
        x1 = float(rng.choice([0, width * 0.4, width - 6])) + rng.uniform(0, 4)
        y1 = float(rng.choice([0, height * 0.4, height - 6])) + rng.uniform(0, 4)
        x2, y2 = min(width, x1 + rng.uniform(4, width)), min(height, y1 + rng.uniform(4, height))
        dets.append(Detection((x1, y1, x2, y2), 0.99 - k / 100, k, f"class{k}"))
    return dets


@pytest.mark.parametrize("size", [(48, 64), (256, 256), (240, 320), (1080, 1920)])
def test_detect_tags_stay_inside_the_image_and_never_overlap(size: tuple[int, int]) -> None:
    from visiontool.io.draw import detection_tags

    height, width = size
    tags = detection_tags(crowded(height, width), height, width)
    assert tags and tags[0][2] == 0  # the best detection always keeps its tag
    rects = [rect for _, rect, _ in tags]
    for x1, y1, x2, y2 in rects:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert x2 - x1 <= max(24, width // 2)  # never wider than half the picture
    for a, (ax1, ay1, ax2, ay2) in enumerate(rects):
        for bx1, by1, bx2, by2 in rects[a + 1 :]:
            assert not (ax1 < bx2 and bx1 < ax2 and ay1 < by2 and by1 < ay2)
    covered = sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in rects)
    last = (rects[-1][2] - rects[-1][0]) * (rects[-1][3] - rects[-1][1])
    assert covered - last < 0.3 * height * width  # tags stop before covering the picture


def test_a_tag_moves_inside_or_below_its_box_rather_than_hide_another() -> None:
    from visiontool.io.draw import detection_tags
    from visiontool.results import Detection

    big = Detection((100.0, 100.0, 200.0, 200.0), 0.9, 0, "square")
    small = Detection((104.0, 86.0, 116.0, 98.0), 0.8, 1, "circle")  # just above big's corner
    (_, (x1, y1, x2, y2), _), (_, small_tag, _) = detection_tags([big, small], 256, 256)
    assert y1 >= 100 and x1 >= 100  # inside the square, not over the little circle
    assert y1 == 100  # at the box's top edge, the first spot after "above"
    assert small_tag[3] <= 86 or small_tag[1] >= 98  # the circle's own tag leaves it visible
    # a small box at the top of the picture (no room above; inside would hide it): below it
    top_a = Detection((10.0, 0.0, 60.0, 40.0), 0.9, 0, "star")
    top_b = Detection((10.0, 0.0, 60.0, 40.0), 0.5, 2, "cross")  # a duplicate at the same place
    (_, first, _), (_, second, _) = detection_tags([top_a, top_b], 256, 256)
    assert first[1] == 40  # below the box: its object stays visible
    assert second[3] <= first[1] or second[1] >= first[3]  # the duplicate's tag covers no tag
    big_a = Detection((10.0, 0.0, 210.0, 200.0), 0.9, 0, "star")  # big: inside its top edge
    ((_, big_tag, _),) = detection_tags([big_a], 256, 256)
    assert big_tag[1] == 0


def test_detect_tags_are_painted_where_they_are_placed() -> None:
    from visiontool.io.draw import blank, detection_tags, draw_detections

    dets = crowded(256, 256)
    picture = draw_detections(blank(256, 256), dets)
    for _, (x1, y1, x2, y2), index in detection_tags(dets, 256, 256):
        fill = np.array(color(dets[index].class_id)[::-1], np.uint8)
        inside = (picture[y1:y2, x1:x2] == fill).all(axis=2).mean()
        assert inside > 0.5, (index, inside)  # a tag is its class colour, not hidden by others


def test_detect_font_and_lines_scale_with_the_image() -> None:
    from visiontool.io.draw import detect_style, detection_tags
    from visiontool.results import Detection

    styles = [detect_style(side, side) for side in (48, 256, 640, 1080, 4000)]
    assert [t for t, _ in styles] == sorted(t for t, _ in styles) and styles[0][0] == 1
    assert [s for _, s in styles] == sorted(s for _, s in styles) and styles[0][1] < 0.35
    one = [Detection((10.0, 30.0, 40.0, 45.0), 0.87, 1, "triangle")]
    heights = {}
    for side in (64, 256, 1080):
        ((text, (x1, y1, x2, y2), _),) = detection_tags(one, side, side)
        heights[side] = y2 - y1
        if side >= 256:
            assert text == "triangle 0.87"
        else:  # on a thumbnail the score goes first, so the tag fits
            assert text.startswith("tri") and "0.87" not in text
    assert heights[64] < heights[256] < heights[1080] and heights[64] <= 14


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


def test_boxes_far_outside_or_not_finite_draw_without_error() -> None:
    """A broken model's boxes (1e12, NaN, inf, inverted) must not crash the writer: OpenCV takes
    32-bit ints, so far corners are pulled in and non-finite boxes are skipped."""
    from visiontool.io.draw import blank, detection_tags, draw_detections
    from visiontool.results import Detection

    nan, inf = float("nan"), float("inf")
    dets = [
        Detection((20.0, 20.0, 60.0, 60.0), 0.9, 0, "ok"),
        Detection((1e12, -1e12, 1e12, 1e12), 0.8, 1, "far"),
        Detection((nan, 0.0, 5.0, 5.0), 0.7, 2, "nan"),
        Detection((inf, 0.0, 5.0, 5.0), 0.6, 3, "inf"),
        Detection((100.0, 100.0, 90.0, 90.0), 0.5, 4, "inverted"),
    ]
    picture = draw_detections(blank(128, 128), dets)
    tagged = {dets[i].label for _, _, i in detection_tags(dets, 128, 128)}
    assert "nan" not in tagged and "inf" not in tagged and "ok" in tagged
    assert (picture == np.array(color(0)[::-1], np.uint8)).all(axis=2).sum() > 50


def test_cell_labels_sit_centred_in_their_cells(tmp_path):
    """Counts drawn as one outline collection land inside the cell they name, and nowhere
    else."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from visiontool.io.plotting import cell_labels

    fig = Figure(figsize=(4, 4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.1, 0.8, 0.8))
    ax.imshow(np.zeros((2, 2)), cmap="gray_r", vmin=0, vmax=1)  # white cells
    ax.set_axis_off()
    cell_labels(ax, [1], [0], ["123"], ["black"], fontsize=14)  # row 0, column 1
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[:, :, :3].min(axis=2)
    ys, xs = np.nonzero(pixels < 128)
    assert len(xs) > 30  # the digits were drawn
    height = pixels.shape[0]
    (x0, y0), (x1, y1) = ax.transData.transform([(0.5, -0.5), (1.5, 0.5)])  # the cell
    top, bottom = height - max(y0, y1), height - min(y0, y1)  # display y runs upwards
    assert x0 <= xs.min() and xs.max() <= x1 and top <= ys.min() and ys.max() <= bottom
    centre = ((x0 + x1) / 2, (top + bottom) / 2)
    assert abs((xs.min() + xs.max()) / 2 - centre[0]) < 3
    assert abs((ys.min() + ys.max()) / 2 - centre[1]) < 3


def test_confusion_counts_grow_with_their_cells():
    from visiontool.engine.evaluate.plots import count_fontsize

    assert count_fontsize(6.0, ["a", "b", "c", "background"], ["61"]) == 14.0
    many = count_fontsize(7.2, [str(i) for i in range(21)], ["123"])
    assert 6.0 <= many <= 8.0
    cell = 7.2 * 72 * 0.7 / 21
    assert 3 * 0.65 * many <= cell  # three digits fit their cell's width
