"""The console table of a benchmark: which columns, formatted how, fitted to the width.

Pure formatting of the JSON rows (`BenchReport.to_dict()["rows"]`) into header and cell
strings; the CLI prints them. Every column has a priority: on a narrow terminal the least
important go first (percentiles, cold time, memory ...), never the model, the batch, images/s
or the ratio against the first row. Columns with no value in any row (FLOPs of a data
loader) are left out; notes and errors are too long for a cell and go under the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PADDING = 2  # rich's Table(box=None) pads each cell by one space on both sides
MISSING = "-"


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict[str, Any]], str]
    priority: int  # 0: always shown; higher numbers are dropped first


@dataclass(frozen=True)
class ScaledColumn:
    """A number shown in the largest unit its biggest value reaches (an H100's TFLOP/s, a
    LeNet's MFLOP/s), so small models do not print long runs of zeros."""

    key: str
    units: tuple[tuple[str, float], ...]  # (header, value of one unit), largest first
    priority: int

    def resolve(self, rows: list[dict[str, Any]]) -> Column:
        values = [abs(row[self.key]) for row in rows if row[self.key] is not None]
        biggest = max(values, default=0.0)
        header, unit = next(((h, u) for h, u in self.units if biggest >= u), self.units[-1])
        return Column(header, _scaled(self.key, unit), self.priority)


def number(value: float | None) -> str:
    """Three significant digits or more, never scientific notation (0.000014, 0.0123, 1.23,
    123, 12345)."""
    if value is None:
        return MISSING
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    if not size:
        return "0"
    text = f"{value:.3g}"
    if "e" in text:  # under 1e-4: as many decimals as three significant digits need
        import math

        text = f"{value:.{2 - math.floor(math.log10(size))}f}"
    return text


def _latency(key: str, per_image: bool = False) -> Callable[[dict[str, Any]], str]:
    def cell(row: dict[str, Any]) -> str:
        latency = row["latency_per_image_ms" if per_image else "latency_ms"]
        return number(latency[key]) if latency else MISSING

    return cell


def _scaled(key: str, scale: float) -> Callable[[dict[str, Any]], str]:
    return lambda row: number(row[key] / scale) if row[key] is not None else MISSING


def _percent(row: dict[str, Any]) -> str:
    share = row["peak_share"]
    if share is None:
        return MISSING
    percent = 100 * share
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"


def _ratio(row: dict[str, Any]) -> str:
    return MISSING if row["ratio"] is None else f"{row['ratio']:.2f}x"


def _plain(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: MISSING if row[key] is None else str(row[key])


COLUMNS: tuple[Column | ScaledColumn, ...] = (
    Column("model", _plain("model"), 0),
    Column("batch", _plain("batch"), 0),
    Column("imgsz", _plain("imgsz"), 1),
    Column("dtype", _plain("dtype"), 1),
    Column("ms", _latency("mean"), 1),
    Column("p50", _latency("p50"), 5),
    Column("p90", _latency("p90"), 8),
    Column("p99", _latency("p99"), 4),
    Column("ms/img", _latency("mean", per_image=True), 6),
    Column("img/s", _scaled("images_per_s", 1), 0),
    Column("ratio", _ratio, 0),
    Column("cold ms", _scaled("cold_ms", 1), 6),
    Column("outl", _plain("outliers"), 7),
    ScaledColumn("flops", (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)), 4),
    ScaledColumn("tflops_achieved", (("TFLOP/s", 1.0), ("GFLOP/s", 1e-3), ("MFLOP/s", 1e-6)), 3),
    Column("%peak", _percent, 2),
    Column("MB", _scaled("peak_mem_mb", 1), 3),
    ScaledColumn("params", (("Mparams", 1e6), ("kparams", 1e3), ("params", 1.0)), 6),
    Column("", lambda row: "failed" if row["error"] else "", 0),  # the reason: under the table
)
LEGEND = (
    "ms: mean per timed call (one batch), p50/p90/p99 alike; img/s = batch / mean; ratio: img/s "
    "against the first row; GFLOP (or MFLOP) per image; FLOP/s achieved, and %peak: its share "
    "of the device's peak; MB: peak memory; outl: slow calls, counted, not dropped"
)


def fit_table(rows: list[dict[str, Any]], width: int) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the columns that have values, the least important dropped until the
    table fits `width` characters."""
    resolved = [c.resolve(rows) if isinstance(c, ScaledColumn) else c for c in COLUMNS]
    columns = [c for c in resolved if any(c.cell(row) not in (MISSING, "") for row in rows)]
    cells = {c.header: [c.cell(row) for row in rows] for c in columns}
    widths = {c.header: max([len(c.header), *map(len, cells[c.header])]) + PADDING
              for c in columns}  # fmt: skip
    while sum(widths[c.header] for c in columns) > width:
        droppable = [c for c in columns if c.priority > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda c: (c.priority, columns.index(c)))
        columns.remove(worst)
    headers = [c.header for c in columns]
    return headers, [[cells[h][i] for h in headers] for i in range(len(rows))]
