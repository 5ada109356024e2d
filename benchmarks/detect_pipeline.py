"""Whole-process throughput of `visiontool detect` against a naive one-image-at-a-time loop.

    python benchmarks/detect_pipeline.py --n 48 --model frcnn-mobile-320 [--weights PATH]

Same model, weights (seeded random by default, or a checkpoint), images (1920x1080 photo-like
JPEGs) and outputs (full-resolution annotated JPEGs); start-up included; best of --repeat
interleaved runs. The logic lives in visiontool.engine.benchmark.pipeline (also
`visiontool benchmark --task pipeline`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform

from visiontool.engine.benchmark.pipeline import BenchConfig, run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--model", default="frcnn-mobile-320")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--inflight", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="auto", help="both sides run on it (auto: cuda if any)")
    args = parser.parse_args()
    config = BenchConfig(model=args.model, weights=args.weights, n=args.n, conf=args.conf,
                         batch=args.batch, workers=args.workers, inflight=args.inflight,
                         repeat=args.repeat, device=args.device)  # fmt: skip
    result = run_benchmark(config)
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"images: {args.n} x 1920x1080 JPEG, model {args.model}, weights {args.weights}, "
          f"device {args.device}")  # fmt: skip
    print(f"naive loop       : {result.naive_images_per_s:6.2f} images/s  runs {result.naive_s}")
    print(f"visiontool detect: {result.ours_images_per_s:6.2f} images/s  runs {result.ours_s}")
    print(f"ratio            : {result.ratio:6.2f}x best vs best, "
          f"{result.median_paired_ratio:.2f}x median of run pairs")  # fmt: skip
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
