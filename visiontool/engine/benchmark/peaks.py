"""The device's peak TFLOP/s, so a row can say what share of the hardware a model uses.

GPUs: dense (not sparse) tensor-core and FP32 peaks from the vendors' datasheets, by dtype
(datasheets quote "with sparsity" figures first; those are halved here). fp32 rows count
against the TF32 peak where TF32 runs (cuDNN convolutions use it by default on Ampere and
later), and `peak_basis` says which peak a row used. A GPU not in the table, and any CPU, is
measured: the best of a few large matmuls in the row's dtype, in this process, on the same
threads. `--peak-tflops` overrides both.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

# name pattern (upper case; first match wins) -> dense TFLOP/s by basis; None: no such units
GPU_PEAKS: tuple[tuple[str, str, dict[str, float | None]], ...] = (
    ("H200 NVL", r"\bH200\b.*\bNVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H200 SXM", r"\bH200\b", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("H100 NVL", r"\bH100\b.*\bNVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}),
    ("H100 PCIe", r"\bH100\b.*\bPCIE\b", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0,
                                         "fp16": 756.0}),
    ("H100 SXM", r"\bH100\b", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    ("A100", r"\bA100\b", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    ("A30", r"\bA30\b", {"fp32": 10.3, "tf32": 82.0, "bf16": 165.0, "fp16": 165.0}),
    ("A10", r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    ("L40S", r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0}),
    ("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    ("T4", r"\bT4\b", {"fp32": 8.1, "tf32": None, "bf16": None, "fp16": 65.0}),
    ("V100 PCIe", r"\bV100\b.*\bPCIE\b", {"fp32": 14.0, "tf32": None, "bf16": None,
                                         "fp16": 112.0}),
    ("V100 SXM2", r"\bV100\b", {"fp32": 15.7, "tf32": None, "bf16": None, "fp16": 125.0}),
    ("RTX 4090", r"\bRTX 4090\b", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    ("RTX 3090", r"\bRTX 3090\b", {"fp32": 35.6, "tf32": 35.6, "bf16": 71.0, "fp16": 71.0}),
)  # fmt: skip
CPU_MATMUL = 2048  # n of the n x n matmul that measures a CPU
GPU_MATMUL = 8192
MATMUL_REPS = 3
MATMUL_BUDGET_S = 3.0  # stop repeating once this much time went into one measurement


@dataclass(frozen=True)
class Peak:
    """A peak and where it comes from: `source` "table: H100 SXM", "measured: 2048x2048
    matmul" or "given"; `basis` the dtype whose peak it is (fp32, tf32, bf16, fp16)."""

    tflops: float | None
    source: str
    basis: str


@dataclass
class Peaks:
    """Peaks of one run, measured once per (device, dtype) and reused for every row."""

    given: float | None = None
    _cache: dict[tuple[str, str], Peak] = field(default_factory=dict)

    def get(self, device: Any, dtype: str) -> Peak:
        basis = peak_basis(device, dtype)
        if self.given is not None:
            return Peak(self.given, "given", basis)
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = _find(device, dtype, basis)
        return self._cache[key]


def peak_basis(device: Any, dtype: str) -> str:
    """The units an fp32 row runs on: TF32 on a CUDA device where torch allows it (cuDNN's
    default for convolutions, or `torch.set_float32_matmul_precision` below "highest")."""
    import torch

    if dtype != "fp32" or device.type != "cuda":
        return dtype
    allowed = torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    major = torch.cuda.get_device_capability(device)[0]
    return "tf32" if allowed and major >= 8 else "fp32"


def gpu_table_peak(name: str, basis: str) -> tuple[str, float | None] | None:
    """(table name, dense TFLOP/s) of a GPU by its torch name; None when not in the table."""
    upper = name.upper()
    for label, pattern, peaks in GPU_PEAKS:
        if re.search(pattern, upper):
            return label, peaks.get(basis)
    return None


def _find(device: Any, dtype: str, basis: str) -> Peak:
    import torch

    if device.type == "cuda":
        found = gpu_table_peak(torch.cuda.get_device_name(device), basis)
        if found is not None:
            return Peak(found[1], f"table: {found[0]}", basis)
        size = GPU_MATMUL
    else:
        size = CPU_MATMUL
    return Peak(measure_matmul(device, dtype, size), f"measured: {size}x{size} matmul", basis)


def measure_matmul(device: Any, dtype: str, size: int) -> float:
    """Best TFLOP/s of `size` x `size` matmuls in `dtype` on `device` (2 n^3 FLOPs each)."""
    import torch

    from visiontool.engine.benchmark.timing import time_calls

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=torch_dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=torch_dtype)
    time_calls(lambda: a @ b, 1, device)  # warm-up: allocation, kernel choice
    best, started = float("inf"), time.perf_counter()
    for _ in range(MATMUL_REPS):
        best = min(best, time_calls(lambda: a @ b, 1, device)[0])
        if time.perf_counter() - started > MATMUL_BUDGET_S:
            break
    return 2.0 * size**3 / (best / 1e3) / 1e12
