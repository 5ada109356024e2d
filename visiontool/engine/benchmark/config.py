"""`BenchmarkConfig`: one benchmark run, and every check of it made before anything is built.

Options left None were not given; a task fills them with its own defaults (`warmup`,
`iters`, `n`). An option given to a task it does not apply to is an error, not silently
ignored, so `--dtype bf16 --task pipeline` never reports fp32 numbers as bf16 ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from visiontool.errors import ConfigError
from visiontool.runtime import check_budget

TASKS = ("model", "pipeline", "train-step", "data", "eval")
DTYPES = ("fp32", "bf16", "fp16")
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
MIN_IMGSZ = 16
MAX_BATCH = 4096
MAX_IMGSZ = 8192
EVAL_BYTES_PER_IMAGE = 100 * 1500  # 100 predictions as COCO result dicts, ~1.5 kB each
DEFAULT_MODEL = "frcnn-mobile-320"  # the pipeline's, timed when neither --model nor --weights say
# (warmup, iters, n) when not given: a forward or a train step is quick, a COCO eval of 500
# images is not
TASK_DEFAULTS = {
    "model": (10, 50, None),
    "train-step": (5, 20, None),
    "data": (2, 20, None),
    "eval": (1, 5, 500),
    "pipeline": (None, None, 32),
}
APPLIES = {
    "--model": ("model", "train-step", "data", "pipeline"),
    "--backbone": ("model", "train-step"),
    "--weights": ("model", "train-step", "data", "pipeline"),
    "--device": ("model", "train-step", "pipeline"),
    "--batch": ("model", "train-step", "data", "pipeline"),
    "--imgsz": ("model", "train-step"),
    "--dtype": ("model", "train-step"),
    "--compile": ("model", "train-step"),
    "--channels-last": ("model", "train-step"),
    "--warmup": ("model", "train-step", "data", "eval"),
    "--iters": ("model", "train-step", "data", "eval"),
    "--peak-tflops": ("model", "train-step"),
    "--data": ("data",),
    "--workers": ("data", "pipeline"),
    "--n": ("eval", "pipeline"),
    "--repeat": ("pipeline",),
    "--inflight": ("pipeline",),
    "--out": ("model", "train-step", "data", "eval"),
}


@dataclass
class BenchmarkConfig:
    """What to time. Lists make rows: every model x batch x imgsz x dtype is one row."""

    task: str = "model"
    models: list[str] = field(default_factory=list)  # empty: DEFAULT_MODEL or the checkpoint's
    backbone: str | None = None
    weights: str = "none"
    device: str = "auto"
    batches: list[int] = field(default_factory=lambda: [1])
    imgszs: list[int] | None = None  # None: each model's own input size
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    compile: bool = False
    channels_last: bool = False
    warmup: int | None = None
    iters: int | None = None
    peak_tflops: float | None = None
    data: str | None = None
    workers: int | None = None
    n: int | None = None
    repeat: int | None = None
    inflight: int | None = None
    given: tuple[str, ...] = ()  # the options the user gave (checked against APPLIES)

    @property
    def warmup_calls(self) -> int:
        return self.warmup if self.warmup is not None else int(TASK_DEFAULTS[self.task][0] or 0)

    @property
    def timed_calls(self) -> int:
        return self.iters if self.iters is not None else int(TASK_DEFAULTS[self.task][1] or 1)

    @property
    def eval_images(self) -> int:
        return self.n if self.n is not None else int(TASK_DEFAULTS["eval"][2] or 1)


def check_config(config: BenchmarkConfig) -> BenchmarkConfig:
    """Raise `ConfigError` (exit 2) for the first bad value; returns the config with dtype
    aliases resolved. Model names are checked by `check_models`."""
    if config.task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {config.task!r}")
    for option in config.given:
        tasks = APPLIES.get(option)
        if tasks is not None and config.task not in tasks:
            raise ConfigError(
                f"{option} does not apply to --task {config.task} (it applies to "
                f"{', '.join(tasks)})"
            )
    _check_ints("--batch", config.batches, 1, MAX_BATCH)
    if config.imgszs is not None:
        _check_ints("--imgsz", config.imgszs, MIN_IMGSZ, MAX_IMGSZ)
    config.dtypes = [_dtype(d) for d in config.dtypes]
    for option, value, least in (("--warmup", config.warmup, 0), ("--iters", config.iters, 1),
                                 ("--n", config.n, 1), ("--workers", config.workers, 0),
                                 ("--repeat", config.repeat, 1),
                                 ("--inflight", config.inflight, 1)):  # fmt: skip
        if value is not None and value < least:
            raise ConfigError(f"{option} must be at least {least}, got {value}")
    if config.peak_tflops is not None and not (
        math.isfinite(config.peak_tflops) and config.peak_tflops > 0
    ):
        raise ConfigError(f"--peak-tflops must be a number > 0, got {config.peak_tflops}")
    if config.task == "data" and not config.data:
        raise ConfigError(
            "--task data times a data set's decoding and augmentation: pass --data PATH"
        )
    if config.task == "pipeline" and (len(config.models) > 1 or len(config.batches) > 1):
        raise ConfigError("--task pipeline times one --model at one --batch; give one of each")
    if config.task == "eval":  # the set, and one copy per evaluator, as Python dicts
        check_budget(3 * EVAL_BYTES_PER_IMAGE * config.eval_images, f"--n {config.eval_images}")
    return config


def check_input_budget(config: BenchmarkConfig, device_type: str) -> None:
    """On CPU, refuse a --batch x --imgsz whose activations would not fit in memory (the
    budget `detect --imgsz` uses: float input and ~16x that in activations)."""
    if device_type != "cpu" or not config.imgszs:
        return
    batch, imgsz = max(config.batches), max(config.imgszs)
    check_budget(16 * 3 * 4 * imgsz * imgsz * batch, f"--batch {batch} --imgsz {imgsz}")


def check_models(config: BenchmarkConfig) -> None:
    """Every --model name is known (`UnknownName`, exit 2, with the nearest names), and
    --backbone goes to models that compose one, before the first row is timed."""
    from visiontool import registry

    for name in config.models:
        spec = registry.get("model", name)
        if config.backbone and not (spec.composes or spec.task == "single"):
            raise ConfigError(
                f"--backbone composes a model over a backbone (tinyssd, ssd-focal, yolo, "
                f"frcnn-vgg16, single); {spec.name} has its own"
            )
    if config.backbone:
        registry.get("backbone", config.backbone)


def check_dtype_on(dtypes: list[str], device_type: str) -> None:
    """fp16 on CPU is refused: autocast's CPU fp16 kernels are slow fallbacks in most torch
    builds, so the row would time the emulation, not the model; bf16 is the CPU's half type."""
    if device_type == "cpu" and "fp16" in dtypes:
        raise ConfigError("--dtype fp16 is not timed on cpu (no fast fp16 kernels there): use "
                          "bf16 or fp32 on cpu, or --device cuda")  # fmt: skip


def _dtype(text: str) -> str:
    name = DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in DTYPES:
        raise ConfigError(f"--dtype takes {', '.join(DTYPES)}, got {text!r}")
    return name


def _check_ints(option: str, values: list[int], least: int, most: int) -> None:
    if not values:
        raise ConfigError(f"{option} needs at least one value")
    for value in values:
        if not least <= value <= most:
            raise ConfigError(f"{option} values must be whole numbers from {least} to {most}, "
                              f"got {value}")  # fmt: skip
