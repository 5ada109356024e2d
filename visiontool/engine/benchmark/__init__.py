"""Benchmarks: `run(config)` times what `visiontool benchmark --task ...` asks for.

- model, train-step (`model.py`): any registry model's forward pass, or training step, on
  synthetic input, per model x batch x imgsz x dtype;
- data (`data.py`): the training data pipeline's decode + augment throughput;
- eval (`eval.py`): our COCO scoring against pycocotools;
- pipeline (`pipeline.py`): `detect` against a naive loop, as whole processes (its own
  config and result, `pipeline.run_benchmark`).

`timing.py` times calls and reduces them to statistics, `memory.py` measures peak memory,
`peaks.py` knows the device's peak TFLOP/s, `system.py` says what the machine is,
`report.py` holds rows (JSON, CSV) and `table.py` fits them to a terminal.
Importing this package imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable

from visiontool.engine.benchmark.config import (
    BenchmarkConfig,
    check_config,
    check_dtype_on,
    check_input_budget,
    check_models,
)
from visiontool.engine.benchmark.report import BenchReport, append_csv, check_out

__all__ = ["BenchReport", "BenchmarkConfig", "append_csv", "check_config", "check_out", "run"]


def run(config: BenchmarkConfig, *, on_log: Callable[[str], None] | None = None) -> BenchReport:
    """Time every row of `config` (task model, train-step, data or eval) on this machine;
    `on_log` gets a line as each row is done."""
    import torch

    from visiontool.engine.benchmark.peaks import Peaks
    from visiontool.engine.benchmark.system import system_info

    config = check_config(config)
    log = on_log or (lambda line: None)
    if config.task == "pipeline":
        raise ValueError("--task pipeline runs through pipeline.run_benchmark")
    check_models(config)
    if config.task in ("model", "train-step"):
        from visiontool.engine.benchmark.model import model_rows
        from visiontool.runtime import resolve_device

        device = resolve_device(config.device)
        check_dtype_on(config.dtypes, device.type)
        check_input_budget(config, device.type)
        rows = list(model_rows(config, device, Peaks(given=config.peak_tflops), log))
    elif config.task == "data":
        from visiontool.engine.benchmark.data import data_rows

        device = torch.device("cpu")
        rows = list(data_rows(config, log))
    else:
        from visiontool.engine.benchmark.eval import eval_rows

        device = torch.device("cpu")
        rows = list(eval_rows(config, log))
    return BenchReport(task=config.task, system=system_info(device), rows=rows)
