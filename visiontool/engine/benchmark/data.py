"""`--task data`: how fast the training data pipeline feeds a model, without the model.

The data set is read the way `train` reads it for that model: its train split (when the set
has splits), the task's view of it (`TaskSpec.adapt`), the augmentation preset and size
training would pick (the task's preset, else the detector head's), batched by a
`DataLoader` with `--workers` processes and the trainer's collate. One timed call is one
batch coming out of the loader (decode + augment + collate); the first batch, which starts
the worker processes, is the cold one. A short set is cycled (each new pass restarts the
workers: those batches show up as outliers). Memory is the main process's only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from visiontool.engine.benchmark.config import BenchmarkConfig
from visiontool.engine.benchmark.memory import MemoryProbe
from visiontool.engine.benchmark.model import ROW_ERRORS, build, model_names, progress_line
from visiontool.engine.benchmark.report import BenchRow
from visiontool.engine.benchmark.timing import summarize, time_calls

TRAIN_SPLIT = "train"  # what `train` reads by default


def data_rows(config: BenchmarkConfig, on_log: Callable[[str], None]) -> Iterator[BenchRow]:
    """One row per model (it picks the task, preset and size) x batch."""
    import torch

    from visiontool.runtime import default_workers

    workers = config.workers if config.workers is not None else default_workers()
    cpu = torch.device("cpu")
    for name in model_names(config):
        info = build(name, config).model_info
        dataset, preset, size = training_set(config.data or "", info)
        for batch in config.batches:
            row = time_loader(dataset, batch=batch, workers=workers, config=config, device=cpu)
            row.model, row.imgsz = info.name, size
            row.note = f"{len(dataset)} images, augment {preset}, {workers} workers"
            on_log(progress_line(row))
            yield row


def training_set(data: str, info: Any) -> tuple[Any, str, int | None]:
    """(data set with training transforms, preset, output size or None) as `train` would
    build them for a model with `info`."""
    from visiontool.data.datasets import list_splits, open_dataset
    from visiontool.data.transforms import build_transforms
    from visiontool.tasks.spec import get_task, training_augment

    task = get_task(info.task)
    split = TRAIN_SPLIT if list_splits(data) else None
    dataset = task.adapt(open_dataset(data, split=split, task=task.reads))
    preset, size = training_augment(task, info)
    dataset.transforms = build_transforms(preset, train=True, imgsz=size)
    return dataset, preset, size


def time_loader(
    dataset: Any, *, batch: int, workers: int, config: BenchmarkConfig, device: Any
) -> BenchRow:
    import torch

    probe = MemoryProbe(device)
    probe.start()
    batches = _cycle(dataset, batch=batch, workers=workers)
    row = BenchRow(task="data", model="", device="cpu", batch=batch, warmup=config.warmup_calls,
                   iters=config.timed_calls, threads=torch.get_num_threads(),
                   weights=config.weights, peak_mem_source=probe.source)  # fmt: skip
    try:
        row.cold_ms = time_calls(lambda: next(batches), 1, device)[0]
        time_calls(lambda: next(batches), config.warmup_calls, device)
        row.stats = summarize(time_calls(lambda: next(batches), config.timed_calls, device))
        row.peak_mem_mb = probe.peak_mb()
    except ROW_ERRORS as exc:  # a worker that died, an augmentation that failed
        row.error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    finally:
        batches.close()  # ends the worker processes
    return row


def _cycle(dataset: Any, *, batch: int, workers: int) -> Iterator[Any]:
    """Batches forever: pass after pass over the set, shuffled as training does."""
    import torch
    from torch.utils.data import DataLoader

    from visiontool.data.collate import detection_collate

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=detection_collate, drop_last=False,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    for _ in itertools.count():
        yield from loader
