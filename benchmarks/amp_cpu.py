"""Training steps on CPU: fp32 against bf16 autocast (`train --amp`), same model, same process.

`runtime.autocast_dtype(device, training=True)` turns bf16 autocast on for CPUs that compute
bf16 natively (AVX512-BF16 or AMX); this measures what that buys for a convolutional detector.
Steps are interleaved (fp32, bf16, fp32, ...) so machine noise hits both; the first of each is
a warm-up and not counted.

    python benchmarks/amp_cpu.py --model tinyssd --batch 16 --steps 6
"""

from __future__ import annotations

import argparse
import time

import torch

from visiontool.models import create_model
from visiontool.runtime import autocast, cpu_has_bf16


def step(model: torch.nn.Module, images: list, targets: list, dtype: torch.dtype | None) -> float:
    started = time.perf_counter()
    with autocast(torch.device("cpu"), dtype):
        losses = model(images, targets)
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tinyssd")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=7).train()
    images = [torch.rand(3, args.imgsz, args.imgsz) for _ in range(args.batch)]
    box = torch.tensor([[0.1, 0.1, 0.4, 0.3], [0.5, 0.2, 0.9, 0.7]]) * args.imgsz
    targets = [{"boxes": box, "labels": torch.tensor([2, 5])} for _ in range(args.batch)]
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(args.steps + 1):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            elapsed = step(model, images, targets, dtype)
            if i:
                times[name].append(elapsed)
    fp32, bf16 = min(times["fp32"]), min(times["bf16"])
    print(f"{args.model} batch {args.batch} at {args.imgsz} px, {torch.get_num_threads()} threads, "
          f"native bf16: {cpu_has_bf16()}, torch {torch.__version__}")  # fmt: skip
    print(f"fp32 {fp32:.3f} s/step ({args.batch / fp32:.1f} img/s), bf16 {bf16:.3f} s/step "
          f"({args.batch / bf16:.1f} img/s): {fp32 / bf16:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
