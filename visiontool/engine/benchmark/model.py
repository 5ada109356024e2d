"""`--task model` and `--task train-step`: time a registry model on synthetic input.

Each row builds its model afresh through `models.factory.create_model` (the one front door:
registry names, `--weights none|DEFAULT|PATH`, `--backbone` for the models that compose one),
so the row's peak memory is its own and `--compile` compiles once per row. Input follows the
model's task spec (`TaskSpec.output`): a detector ("boxes") gets a list of float (3, S, S)
images in [0, 1] and resizes inside, at S through its head's `set_input_size`; a classifier
("scores") gets a normalised-looking (N, C, S, S) batch of random numbers.

- model: eval mode under `torch.no_grad()`, forward only.
- train-step: train mode, forward + loss + backward + SGD step on synthetic targets (one or
  two boxes per image for a detector, a class per image for a classifier), the loss the task
  trains with; fp16 scales the loss as training does.

The first call (cold: allocation, kernel choice, compilation) is reported alone; then
`warmup` calls, then `iters` timed ones. FLOPs are counted after timing (counting runs the
model once, which would warm it), on the eager model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from visiontool.engine.benchmark.config import DEFAULT_MODEL, BenchmarkConfig
from visiontool.engine.benchmark.memory import MemoryProbe
from visiontool.engine.benchmark.peaks import Peaks
from visiontool.engine.benchmark.report import BenchRow
from visiontool.engine.benchmark.timing import summarize, time_calls
from visiontool.errors import ConfigError

ROW_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, TypeError, MemoryError)
"""What a row's run may raise (a shape the model cannot take, out of memory, a compiler
failure): the row records it and the other rows still run."""
FALLBACK_IMGSZ = 224  # a model whose info records no input size
LEARNING_RATE = 1e-3  # small: random weights on random data must not diverge within a run


@dataclass
class Workload:
    """One row's built model and its input, ready to call."""

    module: Any  # the eager module (FLOPs are counted on it)
    runner: Any  # what is timed: the module, or torch.compile of it
    info: Any  # ModelInfo
    task: Any  # TaskSpec
    device: Any
    inputs: Any  # list of images ("boxes") or a batch tensor ("scores")
    targets: Any = None  # train-step only


def model_rows(
    config: BenchmarkConfig, device: Any, peaks: Peaks, on_log: Callable[[str], None]
) -> Iterator[BenchRow]:
    """Every model x batch x imgsz x dtype, one timed row each."""
    warm_runtime(device)
    for name in model_names(config):
        info = build(name, config).model_info  # the input size, and a model-name check
        sizes = config.imgszs or [int(info.input_size or FALLBACK_IMGSZ)]
        for batch, imgsz, dtype in itertools.product(config.batches, sizes, config.dtypes):
            row = time_row(name, config, device, batch=batch, imgsz=imgsz, dtype=dtype,
                           peaks=peaks)  # fmt: skip
            on_log(progress_line(row))
            yield row


def warm_runtime(device: Any) -> None:
    """One small convolution forward and backward before any row: torch initialises its
    thread pool and kernel libraries (oneDNN, cuDNN) on first use, once per process, which
    would otherwise land in the first row's memory (~30 MB on CPU) and cold time."""
    import torch

    conv = torch.nn.Conv2d(3, 8, 3).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    conv(x).relu().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_names(config: BenchmarkConfig) -> list[str | None]:
    """--model values; none given: the --weights checkpoint's own model, else DEFAULT_MODEL."""
    from visiontool.io.weights import weights_kind

    if config.models:
        return list(config.models)
    return [None] if weights_kind(config.weights) == "path" else [DEFAULT_MODEL]


def build(name: str | None, config: BenchmarkConfig) -> Any:
    """The model as every command builds it (`create_model`), with random weights unless
    --weights says otherwise; --backbone (checked by `config.check_models`) for the models
    that compose one."""
    from visiontool.models.factory import create_model

    if config.backbone and name is None:
        raise ConfigError("--backbone needs --model NAME (a checkpoint records its backbone)")
    arch = {"backbone": config.backbone} if config.backbone else {}
    return create_model(name, weights=config.weights, **arch)


def time_row(
    name: str | None,
    config: BenchmarkConfig,
    device: Any,
    *,
    batch: int,
    imgsz: int,
    dtype: str,
    peaks: Peaks,
) -> BenchRow:
    """Build, time and count one row; a failure while running is the row's `error`."""
    import torch

    peak = peaks.get(device, dtype)  # a CPU's is measured: before the row's memory counts
    probe = MemoryProbe(device)
    probe.start()
    torch.manual_seed(0)  # the same random weights and inputs in every row
    row = BenchRow(
        task=config.task, model=name or "checkpoint", device=str(device), batch=batch,
        imgsz=imgsz, dtype=dtype, compile=config.compile, channels_last=config.channels_last,
        weights=config.weights, backbone=config.backbone, warmup=config.warmup_calls,
        iters=config.timed_calls, threads=torch.get_num_threads(),
        peak_mem_source=probe.source, peak=peak,
    )  # fmt: skip
    try:
        work = prepare(name, config, device, batch=batch, imgsz=imgsz)
        row.model = work.info.name
        row.params = sum(p.numel() for p in work.module.parameters())
        call = step_function(work, config.task, dtype)
        row.cold_ms = time_calls(call, 1, device)[0]
        time_calls(call, config.warmup_calls, device)
        row.stats = summarize(time_calls(call, config.timed_calls, device))
        row.peak_mem_mb = probe.peak_mb()
        row.flops = count_flops_per_image(work, config.task, batch)
    except ROW_ERRORS as exc:
        row.error = _error_line(exc, imgsz=imgsz, batch=batch)
    return row


def prepare(
    name: str | None, config: BenchmarkConfig, device: Any, *, batch: int, imgsz: int
) -> Workload:
    """The model on `device` at input size `imgsz`, its synthetic input and targets."""
    import torch

    from visiontool.tasks.spec import get_task

    module = build(name, config)
    info = module.model_info
    task = get_task(info.task)
    set_input_size(module, info, imgsz)
    module.to(device)
    module.train(config.task == "train-step")
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    inputs = make_inputs(module, task, batch, imgsz, device, config.channels_last)
    targets = (
        make_targets(info, task, batch, imgsz, device) if config.task == "train-step" else None
    )
    runner = torch.compile(module) if config.compile else module
    return Workload(module, runner, info, task, device, inputs, targets)


def set_input_size(module: Any, info: Any, imgsz: int) -> None:
    """A detector resizes inside: set that size (as `detect --imgsz` does); a classifier
    takes the input as it comes."""
    from visiontool.models.factory import head_of

    head = head_of(info)
    if head is not None:
        head.set_input_size(module, imgsz)
    elif hasattr(module, "set_input_size"):
        module.set_input_size(imgsz)


def make_inputs(
    module: Any, task: Any, batch: int, imgsz: int, device: Any, channels_last: bool
) -> Any:
    """A list of `batch` float (3, S, S) images in [0, 1] for a detector (its transform
    normalises and batches them, so channels-last applies to its weights only); an
    (N, C, S, S) standard-normal batch for a classifier, C its first layer's channels."""
    import torch

    if task.output == "boxes":
        return [torch.rand(3, imgsz, imgsz, device=device) for _ in range(batch)]
    from visiontool.models.classifiers import first_conv

    channels = int(first_conv(module)[2].in_channels)
    images = torch.randn(batch, channels, imgsz, imgsz, device=device)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def make_targets(info: Any, task: Any, batch: int, imgsz: int, device: Any) -> Any:
    """Training targets as the task prepares them from a data set's: one or two boxes per
    image (absolute xyxy, 0-based labels) for a detector, one class per image otherwise."""
    import torch

    classes = max(1, len(info.classes))
    if task.output == "scores":
        return task.targets(torch.randint(0, classes, (batch,)).tolist(), device)
    raw = []
    for index in range(batch):
        count = 1 + index % 2
        xy = torch.rand(count, 2) * imgsz / 2
        wh = imgsz / 8 + torch.rand(count, 2) * imgsz / 3
        boxes = torch.cat([xy, (xy + wh).clamp(max=imgsz)], dim=1)
        raw.append({"boxes": boxes, "labels": torch.randint(0, classes, (count,))})
    return task.targets(raw, device)


def step_function(work: Workload, task_name: str, dtype: str) -> Callable[[], Any]:
    """What one timed call runs: a forward pass, or a whole training step."""
    if task_name == "train-step":
        return _train_step(work, dtype)
    return _forward(work, dtype)


def _forward(work: Workload, dtype: str) -> Callable[[], Any]:
    import torch

    from visiontool.runtime import autocast

    amp = autocast_dtype(dtype)

    def call() -> Any:
        with torch.no_grad(), autocast(work.device, amp):
            return work.runner(work.inputs)

    return call


def _train_step(work: Workload, dtype: str) -> Callable[[], Any]:
    import torch

    params = [p for p in work.module.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=0.9)
    scaler = torch.amp.GradScaler(work.device.type, enabled=dtype == "fp16")

    def call() -> None:
        loss = training_loss(work, work.runner, dtype)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return call


def training_loss(work: Workload, runner: Any, dtype: str) -> Any:
    """The summed loss of one batch, as the trainer computes it: a detector's own loss dict,
    or the task's loss on a classifier's logits (GoogLeNet's auxiliary outputs dropped)."""
    from visiontool.runtime import autocast

    with autocast(work.device, autocast_dtype(dtype)):
        if work.task.loss is None:
            losses = runner(work.inputs, work.targets)
        else:
            logits = runner(work.inputs)
            logits = logits[0] if isinstance(logits, tuple) else logits
            losses = work.task.loss(logits, work.targets)
    return sum(losses.values())


def count_flops_per_image(work: Workload, task_name: str, batch: int) -> int:
    """FLOPs (2 x multiply-adds) of one call on the eager model, per image: a forward pass,
    or forward + backward for a training step (the optimizer's update is not counted)."""
    import torch

    from visiontool.models.complexity import count_flops

    if task_name == "train-step":

        def run() -> None:
            with torch.enable_grad():
                training_loss(work, work.module, "fp32").backward()

        total = count_flops(run)
        work.module.zero_grad(set_to_none=True)
    else:
        total = count_flops(lambda: work.module(work.inputs))
    return total // batch


def autocast_dtype(dtype: str) -> Any:
    """--dtype -> the autocast dtype (None: fp32, no autocast)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def progress_line(row: BenchRow) -> str:
    """`lenet batch 8 imgsz 32 fp32: 1.23 ms per call, 6504 images/s` as each row ends."""
    from visiontool.engine.benchmark.table import number

    if row.task == "eval":
        what = f"{row.model} on {row.batch} images"
    else:
        what = f"{row.model} batch {row.batch}" + (f" imgsz {row.imgsz}" if row.imgsz else "")
    what += f" {row.dtype}" if row.dtype else ""
    if row.error or row.stats is None:
        return f"{what}: failed ({row.error})"
    return (f"{what}: {number(row.stats.mean)} ms per call, "
            f"{number(row.images_per_s)} images/s")  # fmt: skip


def _error_line(exc: BaseException, *, imgsz: int, batch: int) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return f"out of memory at batch {batch}, imgsz {imgsz}: use a smaller --batch or --imgsz"
    return f"{type(exc).__name__}: {text}"
