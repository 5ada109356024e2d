"""The one plotting setup: every chart visiontool writes (eval PR curves and confusion matrix,
train losses and metrics, `data stats` histograms) is made by `figure()` here.

Figures are built on matplotlib's Agg canvas directly (`Figure` + `FigureCanvasAgg`), never
through pyplot: nothing global changes, so no `matplotlib.use("Agg")` is needed to run without a
display, and a user calling `visiontool.evaluate()` from a notebook keeps their own backend.
The shared style is applied with `rc_context` for the figure's lifetime only, and the PNG is
saved atomically (temp file + rename). matplotlib is imported on first use, not with this
module, so `--help` stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DPI = 100
STYLE: dict[str, Any] = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": "medium",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": "small",
    "legend.framealpha": 0.8,
    "image.cmap": "Blues",
}


@contextmanager
def figure(
    path: str | Path,
    *,
    size: tuple[float, float] = (7, 4),
    nrows: int = 1,
    ncols: int = 1,
    mosaic: list[list[str]] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """`with figure(path, size=(w, h)) as (fig, ax):` draw on `ax` (an array of axes when
    nrows/ncols > 1; with `mosaic`, e.g. [["a", "a"], ["b", "c"]], a dict name -> axes, for
    panels of different sizes); on leaving the block the figure is laid out and written to
    `path` as a PNG, atomically. Nothing is written when the block raises."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with rc_context(STYLE):
        fig = Figure(figsize=size, dpi=DPI)
        FigureCanvasAgg(fig)
        axes = fig.subplot_mosaic(mosaic) if mosaic else fig.subplots(nrows, ncols)
        yield fig, axes
        save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out `fig` and write it to `path` as a PNG, atomically."""
    from matplotlib import rc_context

    from visiontool.io.atomic import atomic_write

    fig.tight_layout()
    # `tight_layout` leaves a placeholder layout engine behind, and with any engine set
    # `savefig` runs a whole extra draw pass (every text measured, ticks placed) before the real
    # one. The layout is done: without the engine the PNG has the same pixels, drawn once
    # (a third less saving time). The rc keys keep a user's autolayout from setting one again.
    with rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))


def preload() -> None:
    """Import what `figure` needs (~0.6 s), e.g. in a worker while its caller does other work."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def integer_ticks(axis: Any) -> None:
    """Whole-number ticks only on `axis` (e.g. `ax.xaxis` for epochs)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def cell_labels(
    ax: Any,
    xs: Any,
    ys: Any,
    labels: list[str],
    colors: Any,
    *,
    fontsize: float = 7,
) -> None:
    """Write `labels[i]` centred at data point (xs[i], ys[i]) in `colors[i]`: hundreds of small
    labels (a confusion matrix's counts) as one collection of glyph outlines, drawn in one
    call. One `ax.text` each costs ~1.4 ms to lay out and render (0.6 s for 21x21 cells); the
    outlines of each distinct label are made once. Not counted in the layout (they sit inside
    the axes)."""
    import numpy as np
    from matplotlib.collections import PathCollection
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as GlyphPath
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    prop = FontProperties(size=fontsize)
    # the box of the outline's points (exact curve extents cost ~2 ms a label), and one
    # vertical centre for every label: that of a digit, so a row's numbers share a baseline
    digit = TextPath((0, 0), "0", prop=prop).vertices
    middle = (digit[:, 1].min() + digit[:, 1].max()) / 2
    shapes: dict[str, Any] = {}
    paths = []
    for label in labels:
        if label not in shapes:
            outline = TextPath((0, 0), label, prop=prop)
            xs_ = outline.vertices[:, 0]
            centre = ((xs_.min() + xs_.max()) / 2, middle)
            shapes[label] = GlyphPath(outline.vertices - centre, outline.codes)
        paths.append(shapes[label])
    if not paths:
        return
    collection = PathCollection(
        paths,
        offsets=np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]),
        offset_transform=ax.transData,
        transform=Affine2D().scale(ax.figure.dpi / 72),  # points -> pixels
        facecolors=list(colors),
        edgecolors="none",
    )
    collection.set_in_layout(False)
    ax.add_collection(collection, autolim=False)
