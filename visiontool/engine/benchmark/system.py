"""What machine a benchmark ran on: the `system` part of `--json` and of each CSV row.

Numbers from two machines only compare when each says what it was (CPU model, GPU and
driver, library versions, threads), so every row carries it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

SYSTEM_KEYS = ("cpu", "cpu_count", "threads", "gpu", "gpu_driver", "cuda", "torch",
               "torchvision", "python", "platform")  # fmt: skip


def system_info(device: Any = None) -> dict[str, Any]:
    """CPU model and cores, torch threads, the GPU of `device` (name, driver, CUDA version;
    None on CPU), torch, torchvision, Python and OS versions."""
    import torch
    import torchvision

    gpu = driver = None
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        driver = gpu_driver(device.index or 0)
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "gpu_driver": driver,
        "cuda": torch.version.cuda if gpu else None,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def cpu_model() -> str:
    """The processor's marketing name (/proc/cpuinfo on Linux; platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_driver(index: int = 0) -> str | None:
    """The NVIDIA driver version (torch does not report it): `nvidia-smi`, or None where it is
    missing or does not answer within 5 s."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
            capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines[0] if done.returncode == 0 and lines else None


def describe(system: dict[str, Any]) -> str:
    """One line for the console: where the numbers come from."""
    where = system["gpu"] or f"{system['cpu']} ({system['cpu_count']} cores)"
    driver = f", driver {system['gpu_driver']}" if system.get("gpu_driver") else ""
    return (f"{where}{driver}; {system['threads']} torch threads; torch {system['torch']}, "
            f"torchvision {system['torchvision']}, python {system['python']}")  # fmt: skip
