"""`benchmark --task pipeline`: `visiontool detect` against a naive one-image-at-a-time loop.

Both run the same model, weights and images and write the same outputs (full-resolution
annotated JPEGs); each is timed as a whole process, start-up included, best of `repeat`
interleaved runs. Any model `detect` runs is timed: a model that gives boxes (detectors, the
single-object model) through the naive detection loop, a classifier (classify, multilabel)
through the naive classification loop. Used by `visiontool benchmark --task pipeline` and
`benchmarks/detect_pipeline.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visiontool.engine.benchmark.config import DEFAULT_MODEL
from visiontool.errors import ConfigError, ModelLoadError


@dataclass
class BenchConfig:
    model: str | None = None  # None: the checkpoint's own model, else DEFAULT_MODEL
    weights: str = "none"
    n: int = 32
    width: int = 1920
    height: int = 1080
    conf: float = 0.25
    batch: int = 1
    workers: int | None = None
    inflight: int | None = None
    repeat: int = 3
    device: str = "auto"  # both sides run on it (the naive loop moves each image there)


@dataclass
class BenchResult:
    config: BenchConfig
    naive_s: list[float]
    ours_s: list[float]

    @property
    def naive_images_per_s(self) -> float:
        return self.config.n / min(self.naive_s)

    @property
    def ours_images_per_s(self) -> float:
        return self.config.n / min(self.ours_s)

    @property
    def ratio(self) -> float:
        """Best against best."""
        return min(self.naive_s) / min(self.ours_s)

    @property
    def median_paired_ratio(self) -> float:
        """Median of run-by-run ratios: each pair ran back to back, so slow drift of a shared
        machine cancels within a pair."""
        return statistics.median(n / o for n, o in zip(self.naive_s, self.ours_s, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "naive_s": self.naive_s,
            "ours_s": self.ours_s,
            "naive_images_per_s": round(self.naive_images_per_s, 3),
            "ours_images_per_s": round(self.ours_images_per_s, 3),
            "ratio": round(self.ratio, 3),
            "median_paired_ratio": round(self.median_paired_ratio, 3),
        }


def make_photos(folder: Path, n: int, width: int = 1920, height: int = 1080) -> None:
    """Photo-like JPEGs: smooth gradients, shapes and mild sensor noise (deterministic)."""
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
            x = int(rng.integers(0, max(1, width - 300)))
            y = int(rng.integers(0, max(1, height - 300)))
            size = int(rng.integers(60, 300))
            draw.ellipse(
                (x, y, x + size, y + size), fill=tuple(int(c) for c in rng.integers(0, 256, 3))
            )
        image = image.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (height, width, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            folder / f"photo_{i:03d}.jpg", quality=90
        )


def bench_model(config: BenchConfig) -> str | None:
    """The model to time: `--model`, else the checkpoint's own (a `--weights` path records
    it), else DEFAULT_MODEL."""
    from visiontool.io.weights import weights_kind

    if config.model:
        return config.model
    return None if weights_kind(config.weights) == "path" else DEFAULT_MODEL


def naive_loop(
    images: Path, out: Path, model: str | None, weights: str, conf: float, device: str = "cpu"
) -> None:
    """The loop most people write first: PIL -> to_tensor -> .to(device) -> model([x]) ->
    outputs back to the CPU -> draw -> save."""
    import torch
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image, to_tensor
    from torchvision.utils import draw_bounding_boxes

    from visiontool.models.factory import load_model
    from visiontool.tasks.spec import get_task

    torch.manual_seed(0)  # the same random weights as `detect --seed 0` when weights=none
    loaded = load_model(model, weights, device=device)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(loaded.info.task)
    if task.output == "scores":
        _naive_classify(images, out, loaded, task)
        return
    with torch.inference_mode():
        for path in sorted(images.glob("*.jpg")):
            x = to_tensor(Image.open(path).convert("RGB"))
            output = {k: v.cpu() for k, v in loaded.module([x.to(loaded.device)])[0].items()}
            keep = output["scores"] >= conf
            labels = [f"{int(c)} {float(s):.2f}" for c, s in
                      zip(output["labels"][keep], output["scores"][keep], strict=True)]  # fmt: skip
            drawn = draw_bounding_boxes((x * 255).to(torch.uint8), output["boxes"][keep], labels)
            to_pil_image(drawn).save(out / path.name, quality=90)


def _naive_classify(images: Path, out: Path, loaded: Any, task: Any) -> None:
    """The classifier's first loop: PIL -> to_tensor -> resize, crop, normalise -> model ->
    softmax or sigmoid -> the best class written on the image -> save."""
    import torch
    from PIL import Image, ImageDraw
    from torchvision.transforms import functional as F

    info = loaded.info
    preprocess = info.preprocess
    mean, std = preprocess.get("mean"), preprocess.get("std")
    with torch.inference_mode():
        for path in sorted(images.glob("*.jpg")):
            picture = Image.open(path).convert("RGB")
            x = F.to_tensor(picture)
            if preprocess.get("square"):
                x = F.resize(x, [int(preprocess["crop"])] * 2, antialias=True)
            elif preprocess.get("resize"):
                x = F.resize(x, [int(preprocess["resize"])], antialias=True)
            if preprocess.get("crop") and not preprocess.get("square"):
                x = F.center_crop(x, [int(preprocess["crop"])] * 2)
            if preprocess.get("grayscale"):
                x = F.rgb_to_grayscale(x)
            if mean and std:
                x = F.normalize(x, mean, std)
            logits = loaded.module(x[None].to(loaded.device))
            logits = logits[0] if isinstance(logits, tuple) else logits
            scores = task.activation(logits)[0].cpu()
            best = int(scores.argmax())
            name = info.classes[best] if info.classes else str(best)
            ImageDraw.Draw(picture).text((10, 10), f"{name} {float(scores[best]):.2f}",
                                         fill=(255, 0, 0))  # fmt: skip
            picture.save(out / path.name, quality=90)


def _timed(cmd: list[str], what: str) -> float:
    """Seconds `cmd` ran; a failure is the child's own error line, with its exit code (3 for
    a model that cannot be loaded), never a CalledProcessError."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
        reason = (errors or lines or [f"exit status {done.returncode}"])[-1][:300]
        error = ModelLoadError if done.returncode == 3 else ConfigError
        raise error(f"benchmark: the {what} run failed: {reason}")
    return time.perf_counter() - start


def check_config(config: BenchConfig) -> None:
    """Every option checked, and the model loaded once, before any image is made: a typo in
    --model is an UnknownName (exit 2), missing weights a ModelLoadError (exit 3)."""
    import math

    from visiontool.models.factory import load_model
    from visiontool.runtime import check_budget, resolve_device

    for option, value, least in (("--n", config.n, 1), ("--repeat", config.repeat, 1),
                                 ("--batch", config.batch, 1), ("--width", config.width, 16),
                                 ("--height", config.height, 16)):  # fmt: skip
        if value < least:
            raise ConfigError(f"{option} must be at least {least}, got {value}")
    if not (math.isfinite(config.conf) and 0.0 <= config.conf <= 1.0):
        raise ConfigError(f"--conf must be in [0, 1], got {config.conf}")
    # one photo in memory at a time while making them, a few in flight while detecting
    check_budget(
        3 * 4 * 8 * config.width * config.height * config.batch,
        f"--width {config.width} --height {config.height}",
    )
    load_model(bench_model(config), config.weights)
    resolve_device(config.device)  # a missing GPU is one line before any image is made


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Time both pipelines as whole processes, interleaved so machine drift hits both alike."""
    from visiontool.runtime import resolve_device

    check_config(config)
    device = str(resolve_device(config.device))
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        make_photos(images, config.n, config.width, config.height)
        model = bench_model(config)
        common = ["--model", model] if model else []
        common += ["--weights", config.weights, "--conf", str(config.conf)]
        naive_cmd = [sys.executable, "-m", "visiontool.engine.benchmark.pipeline", str(images),
                     f"{tmp}/naive", model or "", config.weights, str(config.conf),
                     device]  # fmt: skip
        ours_cmd = [sys.executable, "-m", "visiontool", "detect", str(images), *common,
                    "--batch", str(config.batch), "--device", device, "--out", f"{tmp}/ours",
                    "--exist-ok", "--quiet"]  # fmt: skip
        for flag, value in (("--workers", config.workers), ("--inflight", config.inflight)):
            if value is not None:
                ours_cmd += [flag, str(value)]
        naive_s, ours_s = [], []
        for _ in range(config.repeat):
            naive_s.append(_timed(naive_cmd, "naive loop"))
            ours_s.append(_timed(ours_cmd, "visiontool detect"))
    return BenchResult(config=config, naive_s=naive_s, ours_s=ours_s)


def pipeline_config(config: Any) -> BenchConfig:
    """The pipeline's own config from a checked `BenchmarkConfig` (`--task pipeline`): one
    model (or the checkpoint's, or DEFAULT_MODEL), one batch, `n` images, `repeat` runs."""
    return BenchConfig(
        model=config.models[0] if config.models else None,
        weights=config.weights,
        n=config.n if config.n is not None else BenchConfig.n,
        batch=config.batches[0],
        workers=config.workers,
        inflight=config.inflight,
        repeat=config.repeat if config.repeat is not None else BenchConfig.repeat,
        device=config.device,
    )


if __name__ == "__main__":  # the naive loop's own process: IMAGES OUT MODEL WEIGHTS CONF DEVICE
    naive_loop(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] or None, sys.argv[4],
               float(sys.argv[5]), sys.argv[6])  # fmt: skip
