"""Peak memory of one benchmark row: what building and running the model took.

- CUDA: `torch.cuda.max_memory_allocated` after resetting the peak at the row's start
  (tensors only; the caching allocator's reserve and the CUDA context are not counted).
- CPU (Linux): growth of the process's resident set, peak minus start: VmHWM (the peak RSS)
  read from /proc/self/status after resetting it through /proc/self/clear_refs, minus VmRSS
  at the start (after `malloc_trim` gave the heap's free memory back, so memory an earlier
  row freed is not silently reused). Where the peak cannot be reset, `ru_maxrss` growth is
  used instead: it only shows a row that goes over every earlier peak of the process (a
  lower bound, labelled so).
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

CUDA = "cuda_max_allocated"
RSS = "rss_peak_growth"
MAXRSS = "ru_maxrss_growth (lower bound)"


class MemoryProbe:
    """`start()` before a row builds its model, `peak_mb()` once it has run."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.source = CUDA if device.type == "cuda" else (RSS if _can_reset() else MAXRSS)
        self._base = 0.0

    def start(self) -> None:
        gc.collect()
        _trim_heap()
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.source == RSS:
            _reset_peak()
            self._base = _status_kb("VmRSS") / 1024
        else:
            self._base = _maxrss_mb()

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        now = _status_kb("VmHWM") / 1024 if self.source == RSS else _maxrss_mb()
        return max(0.0, now - self._base)


def _trim_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc `malloc_trim`): otherwise a row
    reuses what an earlier row freed and its RSS does not grow, and its peak reads ~0."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _can_reset() -> bool:
    try:
        _reset_peak()
        return _status_kb("VmHWM") > 0
    except OSError:
        return False


def _reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _status_kb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


def _maxrss_mb() -> float:
    """Peak RSS of the process so far (kilobytes on Linux, bytes on macOS)."""
    import sys

    with contextlib.suppress(ImportError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    return 0.0
