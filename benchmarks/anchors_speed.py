"""Time `multibox_prior` and `multibox_target` at the sizes issue 6 asks for.

A 561x728 image with 5 anchors per pixel (sizes 0.75, 0.5, 0.25; ratios 1, 2, 0.5) gives
2,042,040 anchors; the targets are computed against 20 random boxes. Both must stay well under a
second on 2 CPU cores. Run: `python benchmarks/anchors_speed.py [--threads 2] [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from visiontool.ops.anchors import multibox_prior, multibox_target


def best_of(fn, repeat: int) -> float:
    """Smallest wall time of `repeat` calls (after one warm-up), in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_labels(num: int, generator: torch.Generator) -> torch.Tensor:
    """(1, num, 5) rows [class, x1, y1, x2, y2] of random normalized boxes."""
    xy = torch.rand(num, 2, generator=generator) * 0.7
    wh = 0.05 + torch.rand(num, 2, generator=generator) * 0.25
    cls = torch.randint(0, 3, (num, 1), generator=generator).float()
    return torch.cat([cls, xy, (xy + wh).clamp(max=1.0)], dim=1)[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes, ratios = [0.75, 0.5, 0.25], [1, 2, 0.5]
    anchors = multibox_prior(561, 728, sizes, ratios, device=device)
    labels = random_labels(20, torch.Generator().manual_seed(0)).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    prior_s = best_of(
        lambda: (multibox_prior(561, 728, sizes, ratios, device=device), sync()), args.repeat
    )
    target_s = best_of(lambda: (multibox_target(anchors, labels), sync()), args.repeat)
    result = {
        "device": str(device),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "threads": torch.get_num_threads(),
        "anchors": anchors.shape[1],
        "boxes": labels.shape[1],
        "multibox_prior_s": round(prior_s, 4),
        "multibox_target_s": round(target_s, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
