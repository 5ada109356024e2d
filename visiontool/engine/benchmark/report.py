"""Benchmark rows and the report: derived numbers, JSON, and the CSV that runs append to.

Derived numbers are computed here, once, from the measured ones, so the JSON, the table and
the CSV cannot disagree: images/s = batch / mean latency, achieved TFLOP/s = FLOPs per image
x images/s, peak share = achieved / peak, ratio = images/s / the first row's images/s.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from visiontool.engine.benchmark.peaks import Peak
from visiontool.engine.benchmark.system import SYSTEM_KEYS
from visiontool.engine.benchmark.timing import Stats
from visiontool.errors import ConfigError

CSV_NAME = "benchmark.csv"
LATENCY_KEYS = ("mean", "p50", "p90", "p99")


@dataclass
class BenchRow:
    """One timed combination. `batch` is what one timed call handles (images in a forward
    pass, a loader batch, or images scored by one COCO evaluation); `stats` are per call."""

    task: str
    model: str
    device: str
    batch: int
    imgsz: int | None = None
    dtype: str | None = None
    compile: bool = False
    channels_last: bool = False
    weights: str | None = None
    backbone: str | None = None
    stats: Stats | None = None
    cold_ms: float | None = None
    warmup: int = 0
    iters: int = 0
    threads: int | None = None
    params: int | None = None
    flops: int | None = None  # per image, 2 x multiply-adds
    peak_mem_mb: float | None = None
    peak_mem_source: str | None = None
    peak: Peak | None = None
    note: str | None = None
    error: str | None = None

    @property
    def images_per_s(self) -> float | None:
        if self.stats is None or self.stats.mean <= 0:
            return None
        return self.batch / (self.stats.mean / 1e3)

    @property
    def tflops_achieved(self) -> float | None:
        if self.flops is None or self.images_per_s is None:
            return None
        return self.flops * self.images_per_s / 1e12

    @property
    def peak_share(self) -> float | None:
        achieved, peak = self.tflops_achieved, self.peak
        if achieved is None or peak is None or not peak.tflops:
            return None
        return achieved / peak.tflops

    def to_dict(self, ratio: float | None = None) -> dict[str, Any]:
        stats = self.stats
        return {
            "task": self.task,
            "model": self.model,
            "backbone": self.backbone,
            "weights": self.weights,
            "device": self.device,
            "batch": self.batch,
            "imgsz": self.imgsz,
            "dtype": self.dtype,
            "compile": self.compile,
            "channels_last": self.channels_last,
            "warmup": self.warmup,
            "iters": self.iters,
            "latency_ms": stats.latency() if stats else None,
            "latency_per_image_ms": stats.latency(per=self.batch) if stats else None,
            "cold_ms": _round(self.cold_ms),
            "outliers": stats.outliers if stats else None,
            "images_per_s": _round(self.images_per_s),
            "ratio": _round(ratio),
            "params": self.params,
            "flops": self.flops,
            "tflops_achieved": _round(self.tflops_achieved),
            "peak_tflops": _round(self.peak.tflops) if self.peak else None,
            "peak_source": self.peak.source if self.peak else None,
            "peak_basis": self.peak.basis if self.peak else None,
            "peak_share": _round(self.peak_share),
            "peak_mem_mb": _round(self.peak_mem_mb),
            "peak_mem_source": self.peak_mem_source,
            "threads": self.threads,
            "note": self.note,
            "error": self.error,
        }


@dataclass
class BenchReport:
    task: str
    system: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(row.error is not None for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """`{"system": ..., "rows": [...]}`; each row's `ratio` is its images/s against the
        first row's (None when either has none)."""
        base = self.rows[0].images_per_s if self.rows else None
        rows = []
        for row in self.rows:
            ips = row.images_per_s
            rows.append(row.to_dict(ratio=ips / base if ips is not None and base else None))
        return {"system": dict(self.system), "rows": rows}


def _round(value: float | None, digits: int = 6) -> float | None:
    """`digits` significant digits: shares and TFLOP/s of small models are tiny numbers."""
    return None if value is None else float(f"{float(value):.{digits}g}")


# -- CSV ----------------------------------------------------------------------------------


def flat_row(system: dict[str, Any], row: dict[str, Any], when: str) -> dict[str, Any]:
    """One CSV line: when, the system's keys, then the row's, latency dicts spread out."""
    flat: dict[str, Any] = {"time": when, **{key: system.get(key) for key in SYSTEM_KEYS}}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        elif key not in flat:
            flat[key] = value
    return flat


def csv_columns() -> list[str]:
    """The CSV header, fixed so that appended runs line up."""
    empty = BenchRow(task="", model="", device="", batch=1, stats=Stats(1, 0, 0, 0, 0, 0, 0, 0))
    return list(flat_row({}, empty.to_dict(), "").keys())


def check_out(out: str | Path, *, inputs: list[str]) -> Path:
    """--out checked before anything is timed, as `prepare_out` will check it (a folder, not
    inside `inputs`, which are read recursively), and its CSV (`check_csv`)."""
    from visiontool.io.paths import check_out_dir

    check_out_dir(out, "benchmark", exist_ok=True, recursive_inputs=inputs)
    return check_csv(Path(out))


def check_csv(out: Path) -> Path:
    """The CSV a run appends to: a file that exists must be a plain file with our header
    (written by `benchmark --out` of this version); anything else is the user's and is never
    written."""
    path = Path(out) / CSV_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"{path} is not a plain file; choose another --out")
    if path.is_file() and path.stat().st_size > 0:
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        if header != csv_columns():
            raise ConfigError(
                f"{path} has other columns than this version of `visiontool benchmark` "
                "writes (another program's file, or an older version's): choose another --out"
            )
    return path


def append_csv(report: BenchReport, out: str | Path, *, inputs: list[str] | None = None) -> Path:
    """Append the report's rows to `out/benchmark.csv` (the header only when the file is new),
    in a checked and locked output folder (`io.paths.prepare_out`: never inside `inputs`,
    nothing of the user's removed or replaced). Returns the CSV's path."""
    from visiontool.io.paths import prepare_out

    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    columns = csv_columns()
    with prepare_out(out, "benchmark", exist_ok=True, recursive_inputs=inputs or []) as folder:
        path = check_csv(folder.path)
        new = not path.exists() or path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in report.to_dict()["rows"]:
            writer.writerow(flat_row(report.system, row, when))
        with path.open("a", newline="", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())  # one write: a crash leaves no half run
    return path
