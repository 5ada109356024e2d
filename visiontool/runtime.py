"""Where and how computation runs: device choice, mixed precision, seeding, decode workers.

Shared by every engine job (predict, evaluate, train, bench), so it sits below them all. Torch is
imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError


def resolve_device(name: str) -> Any:
    """--device auto|cpu|cuda|cuda:N -> torch.device, with a clear error when CUDA is absent."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
        index_text = name.split(":", 1)[1] if ":" in name else "0"
        if not index_text.isdigit():
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
        index = int(index_text)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
        return torch.device("cuda", index)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def autocast_dtype(device: Any, *, training: bool = False) -> Any:
    """The mixed-precision dtype for --half (inference) and --amp (training).

    CUDA inference: fp16. Its 10-bit mantissa keeps box regression exact enough; bf16's 8 bits
    cost 1.6 mAP points measured on an H200 (issue #16), and every CUDA GPU computes fp16.
    CUDA training: bf16 where the GPU computes it (fp32's range: no loss scaling), else fp16 (with
    the trainer's grad scaler). CPU: bf16 for training when the processor computes bf16
    natively (AVX512-BF16 or AMX: measured 2.1x faster TinySSD steps, 1.8 s -> 0.83 s per batch
    of 16), else None; None for inference, where torchvision's detectors gain little."""
    import torch

    if device.type == "cpu":
        return torch.bfloat16 if training and cpu_has_bf16() else None
    if device.type != "cuda":
        return None
    if not training:
        return torch.float16
    # native bf16 from Ampere (compute capability 8) on; `is_bf16_supported()` also says yes
    # where it is only emulated (T4, V100: slow), and asks about the current GPU, not `device`
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def autocast(device: Any, dtype: Any) -> Any:
    """torch.autocast for `dtype`, or a no-op context when it is None."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with one number."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_workers() -> int:
    """Decode processes: one per spare core, at most 4. On 2 cores or fewer, none: the model
    already uses every core, and a worker process only takes time from it (measured: 3.8 s
    vs 4.3 s for 48 1080p images with frcnn-mobile-320); decoding then runs in a background
    thread of the main process."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores - 1)


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0.0): what start-up
    (interpreter, imports, option parsing) cost before a command's own work began."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def default_draw_threads() -> int:
    """Threads that draw and encode `detect`'s annotated images beside the writer: one (the
    writer itself) on 4 cores or fewer, where the model needs every core; else a quarter of
    the cores, at most 8 (on a 16-core GPU machine one thread drawing and encoding 1080p JPEGs
    was the pipeline's slowest stage: 35 ms an image against 25 ms of inference)."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else min(8, cores // 4)


# --- resources -------------------------------------------------------------------------------

MEMORY_ENV = "VISIONTOOL_MAX_MEMORY"
MEMORY_FRACTION = 0.5  # of physical RAM, when VISIONTOOL_MAX_MEMORY is not set
FALLBACK_MEMORY = 8 * 2**30  # where physical RAM cannot be read


def memory_budget() -> int:
    """Bytes one allocation asked for by an option may take: `VISIONTOOL_MAX_MEMORY` (bytes,
    or with a K/M/G/T suffix, e.g. `32G`), else half the machine's physical RAM."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        return _parse_bytes(text)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        total = 0
    return int(total * MEMORY_FRACTION) if total > 0 else FALLBACK_MEMORY


def _parse_bytes(text: str) -> int:
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    number, unit = text.upper().rstrip("B"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{MEMORY_ENV}={text!r} is not a size; use bytes or e.g. 512M, 32G")
    return int(value)


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1024 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PB"  # pragma: no cover


MAX_WORKERS = 256
"""Loader processes a command may start: never faster beyond the cores, and --workers 100000
forked until the PID table wrapped, and left orphans behind when stopped."""
MAX_BATCH = 1_000_000
"""Images per batch a command takes (larger overflowed islice with a traceback)."""


def check_loader(workers: int | None, batch: int | None = None) -> None:
    """--workers in 0..MAX_WORKERS and --batch in 1..MAX_BATCH, else ConfigError (exit 2)."""
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 0..{MAX_WORKERS} (0: load in the main process), "
                          f"got {workers}")  # fmt: skip
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise ConfigError(f"--batch must be 1..{MAX_BATCH:,}, got {batch}")


MIN_IMGSZ = 32
"""The smallest --imgsz: smaller inputs fail inside the networks' strided layers."""


def check_imgsz(imgsz: int | None, batch: int = 1, *, training: bool = False) -> None:
    """--imgsz (None: the model's own) at least MIN_IMGSZ, and its float input (long side up
    to ~1.7x) and ~16x that in activations within the memory budget; training keeps the
    activations for the backward pass, about 3x. One line (exit 2), before anything is built;
    shared by detect, train, eval and export."""
    if imgsz is None:
        return
    if imgsz < MIN_IMGSZ:
        raise ConfigError(f"--imgsz must be >= {MIN_IMGSZ}, got {imgsz} (leave it out for the "
                          "model's own size)")  # fmt: skip
    what = f"--imgsz {imgsz}" + (f" with --batch {batch}" if batch > 1 else "")
    factor = 3 if training else 1
    check_budget(factor * 3 * 4 * 16 * imgsz * int(imgsz * 1.7) * batch, what)


def check_budget(bytes_needed: float, what: str) -> None:
    """Refuse (ConfigError, exit 2) an allocation an option asks for that is over the memory
    budget (`memory_budget`), before making it: `what` names the option and its value."""
    limit = memory_budget()
    if not bytes_needed <= limit:  # also catches nan
        raise ConfigError(
            f"{what} needs about {format_bytes(bytes_needed)} of memory, over the "
            f"{format_bytes(limit)} limit; use a smaller value (or raise {MEMORY_ENV})"
        )


def check_finite(value: float, option: str, *, positive: bool = False) -> float:
    """A numeric option value that is a finite number (and > 0 with `positive`), else
    ConfigError (exit 2) naming the option."""
    import math

    if not math.isfinite(value) or (positive and value <= 0):
        want = "a finite number > 0" if positive else "a finite number"
        raise ConfigError(f"{option} must be {want}, got {value}")
    return value


def os_error_text(exc: OSError, path: object = None, action: str = "") -> str:
    """One line for an OS error: what failed, on which path, what to do. ENOSPC, EROFS,
    EACCES, EDQUOT, ENAMETOOLONG ... each get their advice."""
    import errno

    where = path if path is not None else (exc.filename or "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = {
        errno.ENOSPC: "free some space or write elsewhere (--out)",
        errno.EDQUOT: "free some space within your quota or write elsewhere (--out)",
        errno.EROFS: "the file system is read-only; write elsewhere (--out)",
        errno.EACCES: "check the permissions or write elsewhere (--out)",
        errno.EPERM: "check the permissions or write elsewhere (--out)",
        errno.ENAMETOOLONG: "use a shorter path or name",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
        errno.EISDIR: "the path is a folder; give a file",
        errno.EEXIST: "the path exists; choose another",
        errno.ENOENT: "check the path",
        errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    }.get(exc.errno or -1, "check the path and the disk")
    head = f"{action} {where}".strip() if action else f"{where}".strip()
    return f"{head + ': ' if head else ''}{reason}; {advice}"
