"""Timing: call a function N times and reduce the times to the numbers a row reports.

GPU work is asynchronous, so a wall clock around a CUDA call times the launch, not the work:
on CUDA each call is bracketed by `torch.cuda.Event`s and synchronised. On CPU the call is
the work, and `time.perf_counter` is the clock. Outliers are counted, never dropped: a slow
call (a page fault, a recompile, a neighbour on a shared machine) is part of what a user sees,
and the count says how much of the mean it explains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

OUTLIER_IQR = 3.0  # Tukey's "far out" fence: over p50 + 3 x IQR ...
OUTLIER_MEDIAN = 2.0  # ... or over twice the median
OUTLIER_FLOOR = 1.05  # but never within 5% of the median (jitter of near-equal times)


@dataclass(frozen=True)
class Stats:
    """Summary of one row's timed calls, in milliseconds."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    outliers: int

    def latency(self, per: int = 1, ndigits: int = 4) -> dict[str, float]:
        """The JSON `latency_ms` dict, divided by `per` (images in a batch) for per image."""
        return {key: round(getattr(self, key) / per, ndigits)
                for key in ("mean", "p50", "p90", "p99")}  # fmt: skip


def outlier_fence(p50: float, q1: float, q3: float) -> float:
    """Times above this are outliers: over p50 + 3 x IQR or over 2 x p50, whichever is lower,
    but at least 5% over p50 (with near-equal times the IQR is ~0 and any jitter would count)."""
    fence = min(p50 + OUTLIER_IQR * (q3 - q1), OUTLIER_MEDIAN * p50)
    return max(fence, OUTLIER_FLOOR * p50)


def summarize(times_ms: Sequence[float]) -> Stats:
    """Mean, percentiles (linear interpolation, numpy's default) and the outlier count."""
    import numpy as np

    if not times_ms:
        raise ValueError("no times to summarize")
    values = np.asarray(times_ms, dtype=np.float64)
    q1, p50, q3, p90, p99 = np.percentile(values, [25, 50, 75, 90, 99])
    fence = outlier_fence(float(p50), float(q1), float(q3))
    return Stats(
        n=int(values.size),
        mean=float(values.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        min=float(values.min()),
        max=float(values.max()),
        outliers=int((values > fence).sum()),
    )


def time_calls(call: Callable[[], Any], count: int, device: Any) -> list[float]:
    """Milliseconds each of `count` calls of `call` took on `device` (a torch.device)."""
    if device.type == "cuda":
        return _time_cuda(call, count, device)
    return _time_cpu(call, count)


def _time_cpu(call: Callable[[], Any], count: int) -> list[float]:
    import time

    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _time_cuda(call: Callable[[], Any], count: int, device: Any) -> list[float]:
    """Events on the current stream around each call; synchronising after each one keeps a
    call's time its own (no overlap with the next launch)."""
    import torch

    times = []
    with torch.cuda.device(device):
        for _ in range(count):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
    return times
