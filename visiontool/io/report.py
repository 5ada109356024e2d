"""report.html: one self-contained page a person can open offline (`detect --report`, `eval`).

Everything is inside the file: styles, a few lines of script, thumbnails and plots as base64
`data:` images. Nothing is fetched, so it opens from a CI artifact, a mail attachment or a disk
with no network. Thumbnails link to the full annotated images by relative path when those were
saved next to the report.

`detect --report`: a grid of annotated thumbnails (the first MAX_THUMBS inputs: the page must
stay light enough to open; the rest are counted), filterable by class and by minimum score,
and the number of detections (or predicted classes) per class. `eval`: the scores (overall and
per class, with the AP columns of detection) and the PR curves and confusion matrix it drew.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_THUMBS = 1000
THUMB_SIDE = 240  # px, the long side
THUMB_QUALITY = 75

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.controls{display:flex;gap:16px;align-items:center;margin:8px 0;flex-wrap:wrap}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:10px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:5px}
figure img{max-width:100%;display:block;margin:auto}
figcaption{font-size:12px;color:#444;overflow-wrap:anywhere}
.plots img{max-width:48%;min-width:320px;border:1px solid #ddd;background:#fff;margin:4px}
.failed{color:#a00}
"""

SCRIPT = """
function applyFilter(){
  const cls=document.getElementById('cls').value;
  const min=parseFloat(document.getElementById('score').value);
  document.getElementById('scoreval').textContent=min.toFixed(2);
  let shown=0;
  for(const fig of document.querySelectorAll('#grid figure')){
    const scores=JSON.parse(fig.dataset.scores);
    const values=Object.values(scores);
    const show=cls==='all'
      ? (min===0||values.some(s=>s>=min))
      : (cls in scores&&scores[cls]>=min);
    fig.hidden=!show; if(show)shown++;
  }
  document.getElementById('shown').textContent=shown;
}
document.getElementById('cls').addEventListener('change',applyFilter);
document.getElementById('score').addEventListener('input',applyFilter);
applyFilter();
"""


@dataclass
class Thumb:
    name: str
    link: str | None
    data: str  # base64 JPEG
    scores: dict[str, float]  # class -> its best score in the image
    caption: str


class DetectReport:
    """Collects what `detect --report` shows, one result at a time (on the writer thread)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.thumbs: list[Thumb] = []
        self.counts: Counter[str] = Counter()
        self.images = 0
        self.not_shown = 0
        self.failed: list[tuple[str, str]] = []

    def add(self, result: Any, bgr: Any, link: str | None) -> None:
        """One result; `bgr` its annotated image (None when failed or not drawn)."""
        self.images += 1
        if result.error is not None:
            self.failed.append((result.image, result.error))
            return
        found = [(d.label, d.score) for d in result.detections or []] or [
            (c.label, c.score) for c in result.classes or []
        ]
        scores: dict[str, float] = {}
        for label, score in found:
            self.counts[label] += 1
            scores[label] = max(score, scores.get(label, 0.0))
        if bgr is None:
            return
        if len(self.thumbs) >= MAX_THUMBS:
            self.not_shown += 1
            return
        name = result.rel if result.frame is None else f"{result.rel} frame {result.frame}"
        what = f"{len(found)} found" if found else "nothing found"
        self.thumbs.append(Thumb(name, link, thumbnail(bgr), scores, f"{name}: {what}"))

    def html(self, subtitle: str = "") -> str:
        rows = [[c, str(n)] for c, n in self.counts.most_common()]
        body = [
            f"<h1>{html.escape(self.title)}</h1><p class=sub>{html.escape(subtitle)}</p>",
            "<h2>Detections per class</h2>",
            table(["class", "count"], rows) if rows else "<p>nothing found</p>",
            self.grid_html("Images"),
        ]
        if self.failed:
            body.append("<h2 class=failed>Failed inputs</h2>")
            body.append(table(["input", "reason"], [list(f) for f in self.failed]))
        return page(self.title, "".join(body), script=SCRIPT)

    def grid_html(self, heading: str) -> str:
        """The thumbnails with their class and score filter (needs SCRIPT on the page)."""
        options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>'
                          for c in sorted(self.counts))  # fmt: skip
        more = f" (first {len(self.thumbs)} shown; {self.not_shown} more)" if self.not_shown else ""
        return "".join([
            f"<h2>{html.escape(heading + more)}</h2>",
            '<div class=controls><label>class <select id=cls><option value="all">all</option>'
            f"{options}</select></label>"
            '<label>min score <input id=score type=range min=0 max=1 step=0.05 value=0> '
            "<span id=scoreval>0.00</span></label>"
            f"<span><span id=shown>{len(self.thumbs)}</span> of {len(self.thumbs)} shown</span>"
            "</div><div class=grid id=grid>",
            *(_figure(t) for t in self.thumbs),
            "</div>",
        ])  # fmt: skip


def _figure(thumb: Thumb) -> str:
    image = f'<img alt="{html.escape(thumb.name)}" src="data:image/jpeg;base64,{thumb.data}">'
    if thumb.link:
        image = f'<a href="{html.escape(thumb.link)}">{image}</a>'
    scores = html.escape(json.dumps({k: round(v, 4) for k, v in thumb.scores.items()}))
    return (f'<figure data-scores="{scores}">{image}'
            f"<figcaption>{html.escape(thumb.caption)}</figcaption></figure>")  # fmt: skip


def eval_html(
    title: str,
    metrics: dict[str, Any],
    plots: list[Path],
    subtitle: str = "",
    grid: DetectReport | None = None,
) -> str:
    """The eval report: overall scores, the per-class table, the plots embedded, and with
    `grid` the first images with their predictions (and ground truth) drawn."""
    overall = [[k, _number(v)] for k, v in metrics.items() if isinstance(v, (int, float))]
    per_class = metrics.get("per_class") or {}
    columns = sorted({key for row in per_class.values() for key in row}, key=_column_order)
    rows = [[name, *(_number(values.get(c)) for c in columns)]
            for name, values in per_class.items()]  # fmt: skip
    body = [
        f"<h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>",
        "<h2>Scores</h2>",
        table(["metric", "value"], overall),
    ]
    if rows:
        body += ["<h2>Per class</h2>", table(["class", *columns], rows)]
    pictures = [p for p in plots if Path(p).suffix.lower() == ".png" and Path(p).is_file()]
    if pictures:
        body.append("<h2>Plots</h2><div class=plots>")
        for path in pictures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(Path(path).stem)}" '
                        f'src="data:image/png;base64,{data}">')  # fmt: skip
        body.append("</div>")
    if grid is not None and grid.thumbs:
        body.append(grid.grid_html("Images: predictions in colour, ground truth in white"))
        return page(title, "".join(body), script=SCRIPT)
    return page(title, "".join(body))


def _column_order(key: str) -> tuple[int, str]:
    preferred = ["ap", "ap50", "voc_ap50", "precision", "recall", "f1", "n_gt", "n_pred", "n"]
    return (preferred.index(key) if key in preferred else len(preferred), key)


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "-" if value < 0 else f"{value:.4f}"  # COCO's -1: no ground truth
    return str(value)  # escaped by `table`


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}{tail}</body></html>"
    )


def thumbnail(bgr: Any) -> str:
    """A JPEG of the long side THUMB_SIDE (never enlarged), base64."""
    import cv2

    height, width = bgr.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    return base64.b64encode(buffer.tobytes()).decode("ascii") if ok else ""


def write_report(path: Path, text: str) -> Path:
    """Write report.html atomically."""
    from visiontool.io.atomic import write_bytes

    return write_bytes(path, text.encode("utf-8"))
