"""Whole-process throughput of `visiontool detect` against a naive one-image-at-a-time loop.

Both runs use the same model, the same (seeded random or given) weights, the same images and
the same outputs: full-resolution annotated JPEGs. Each is timed as a whole process, start-up
included, and the ratio is printed.

    python benchmarks/detect_pipeline.py --n 32 --model frcnn-mobile-320 [--weights PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_photos(folder: Path, n: int, width: int = 1920, height: int = 1080) -> None:
    """Photo-like 1080p JPEGs: smooth gradients, shapes and mild sensor noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        base = np.stack(
            [
                128 + 100 * np.sin(xx / rng.uniform(150, 400) + i),
                128 + 100 * np.cos(yy / rng.uniform(150, 400) - i),
                128 + 60 * np.sin((xx + yy) / rng.uniform(200, 600)),
            ],
            axis=-1,
        )
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = int(rng.integers(0, width - 300)), int(rng.integers(0, height - 300))
            size = int(rng.integers(60, 300))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse((x, y, x + size, y + size), fill=color)
        image = image.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (height, width, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            folder / f"photo_{i:03d}.jpg", quality=90
        )


def naive(images: Path, out: Path, model: str, weights: str, conf: float) -> None:
    """The loop most people write first: PIL -> to_tensor -> model([x]) -> draw -> save."""
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image, to_tensor
    from torchvision.utils import draw_bounding_boxes

    from visiontool.models.loader import load_model

    torch.manual_seed(0)
    net = load_model(model, weights).module
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for path in sorted(images.glob("*.jpg")):
            x = to_tensor(Image.open(path).convert("RGB"))
            output = net([x])[0]
            keep = output["scores"] >= conf
            labels = [f"{int(c)} {float(s):.2f}" for c, s in zip(output["labels"][keep],
                                                                  output["scores"][keep])]  # fmt: skip
            drawn = draw_bounding_boxes((x * 255).to(torch.uint8), output["boxes"][keep], labels)
            to_pil_image(drawn).save(out / path.name, quality=90)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--model", default="frcnn-mobile-320")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive", nargs=2, metavar=("IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        naive(Path(args.naive[0]), Path(args.naive[1]), args.model, args.weights, args.conf)
        return
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        make_photos(images, args.n)
        common = ["--model", args.model, "--weights", args.weights, "--conf", str(args.conf)]
        naive_cmd = [sys.executable, __file__, "--naive", str(images), f"{tmp}/naive", *common]
        ours_cmd = [sys.executable, "-m", "visiontool", "detect", str(images), *common,
                    "--batch", str(args.batch), "--out", f"{tmp}/ours", "--exist-ok", "--quiet"]  # fmt: skip
        if args.workers is not None:
            ours_cmd += ["--workers", str(args.workers)]
        naive_s, ours_s = [], []
        for _ in range(args.repeat):  # interleaved so drift hits both alike
            naive_s.append(timed(naive_cmd))
            ours_s.append(timed(ours_cmd))
        best_naive, best_ours = min(naive_s), min(ours_s)
        print(f"images: {args.n} x 1920x1080 JPEG, model {args.model}, weights {args.weights}")
        print(f"naive loop      : {args.n / best_naive:6.2f} images/s (best of {args.repeat})")
        print(f"visiontool detect: {args.n / best_ours:6.2f} images/s (best of {args.repeat})")
        print(f"ratio           : {best_naive / best_ours:6.2f}x")


if __name__ == "__main__":
    main()
