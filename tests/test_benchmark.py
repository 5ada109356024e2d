"""`visiontool benchmark --task pipeline` times both pipelines as processes and reports a
ratio."""

from __future__ import annotations

import contextlib
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from visiontool.engine.benchmark import pipeline as bench


def test_result_arithmetic_on_known_times():
    """Best-vs-best throughputs and ratio, and the median of the paired ratios, on times whose
    answers are known (a mean, a max or a swapped pair would give other numbers)."""
    config = bench.BenchConfig(n=4, repeat=3)
    result = bench.BenchResult(config=config, naive_s=[2.0, 1.0, 4.0], ours_s=[0.5, 0.8, 1.0])
    data = result.to_dict()
    assert data["naive_images_per_s"] == 4.0 and data["ours_images_per_s"] == 8.0
    assert data["ratio"] == 2.0  # 1.0 s against 0.5 s
    assert data["median_paired_ratio"] == 4.0  # median of 4.0, 1.25, 4.0
    assert data["config"]["n"] == 4 and data["naive_s"] == [2.0, 1.0, 4.0]


def test_benchmark_prints_the_throughputs_it_measured(cli, monkeypatch):
    result = bench.BenchResult(bench.BenchConfig(n=6), naive_s=[3.0, 2.0], ours_s=[1.0, 1.5])
    monkeypatch.setattr(bench, "run_benchmark", lambda config: result)
    printed = cli("benchmark", "--task", "pipeline", "--n", "6", "--repeat", "2")
    assert printed.exit_code == 0, printed.output
    assert "naive loop       : 3.00 images/s" in printed.output
    assert "visiontool detect: 6.00 images/s" in printed.output
    assert "2.00x best vs best, 2.17x median of run pairs" in printed.output  # 3.0, 1.33
    assert "random weights (speed only" in printed.output and "on cpu" in printed.output
    printed = cli("benchmark", "--task", "pipeline", "--n", "6", "--repeat", "2", "--weights",
                  "DEFAULT")  # fmt: skip
    assert "weights DEFAULT" in printed.output and "random weights" not in printed.output


@pytest.mark.slow
def test_benchmark_command_runs_both_pipelines_on_the_same_images(cli, tmp_path, monkeypatch):
    """Keep the benchmark's working folder and record each timed command, then check that both
    pipelines wrote every image at full size, that their pictures agree, and that the JSON's
    throughputs and ratio are the recorded times'."""
    work = tmp_path / "bench"
    work.mkdir()
    monkeypatch.setattr(bench.tempfile, "TemporaryDirectory", lambda: contextlib.nullcontext(work))
    timed: list[tuple[list[str], float]] = []
    original = bench._timed

    def recording(cmd: list[str], what: str) -> float:
        seconds = original(cmd, what)
        timed.append((cmd, seconds))
        return seconds

    monkeypatch.setattr(bench, "_timed", recording)
    n, width, height = 2, 1920, 1080
    result = cli("benchmark", "--task", "pipeline", "--n", str(n), "--repeat", "1", "--batch", "2",
                 "--inflight", "1", "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])

    naive_s = [s for cmd, s in timed if "visiontool.engine.benchmark.pipeline" in cmd]
    ours_s = [s for cmd, s in timed if "detect" in cmd]
    assert len(naive_s) == len(ours_s) == 1 and len(timed) == 2
    assert data["naive_s"] == naive_s and data["ours_s"] == ours_s
    assert all(math.isfinite(s) and s > 0 for s in naive_s + ours_s)
    assert data["naive_images_per_s"] == pytest.approx(n / min(naive_s), abs=1e-3)
    assert data["ours_images_per_s"] == pytest.approx(n / min(ours_s), abs=1e-3)
    assert data["ratio"] == pytest.approx(min(naive_s) / min(ours_s), abs=1e-3)
    assert data["config"]["inflight"] == 1 and data["config"]["batch"] == 2
    # both sides on the one device (on a GPU machine the naive loop once ran on the CPU)
    naive_cmd, ours_cmd = (cmd for cmd, _ in timed)
    assert naive_cmd[-1] == ours_cmd[ours_cmd.index("--device") + 1] == "cpu"
    assert data["config"]["device"] == "cpu"

    inputs = sorted(p.name for p in (work / "images").glob("*.jpg"))
    assert len(inputs) == n
    assert sorted(p.name for p in (work / "naive").glob("*.jpg")) == inputs
    assert sorted(p.name for p in (work / "ours").glob("*.jpg")) == inputs
    rows = [json.loads(x) for x in (work / "ours" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["image"].rsplit("/", 1)[-1] for r in rows) == inputs
    assert all(r["error"] is None for r in rows)

    def pixels(path):
        with Image.open(path) as image:
            assert image.size == (width, height), path
            return np.asarray(image.convert("RGB"), dtype=np.int16)

    for name in inputs:  # the same picture, boxes (if any) aside: nearly every pixel agrees
        naive, ours = pixels(work / "naive" / name), pixels(work / "ours" / name)
        assert np.mean(np.abs(naive - ours) <= 8) > 0.98, name
    if n > 1:  # and that check does tell two pictures apart
        other = pixels(work / "naive" / inputs[1])
        assert np.mean(np.abs(pixels(work / "ours" / inputs[0]) - other) <= 8) < 0.9


def test_gpu_check_script_is_valid_bash_and_covers_each_check(tmp_path):
    """benchmarks/gpu_check.sh is run once per GPU session, where a syntax error would waste the
    machine's time: it must parse, and name every check issue #16 asks for."""
    import subprocess
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    for name in ("gpu_check.sh", "gpu_env.sh", "gpu_vgg16.sh"):  # gpu_env.sh: their set-up
        assert subprocess.run(["bash", "-n", str(folder / name)]).returncode == 0, name
    # a dry run, every python command replaced by `true`: what bash -n cannot see (an unset
    # variable under set -u, a bad test expression) fails here, in a second, not on the GPU
    for name in ("gpu_check.sh", "gpu_vgg16.sh"):
        env = {**os.environ, "PYTHON": "true", "DEVICE": "cpu", "QUICK": "1",
               "OUT": str(tmp_path / name), "WORK": str(tmp_path / "work")}  # fmt: skip
        run = subprocess.run(["bash", str(folder / name)], env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        for fault in ("unbound variable", "command not found", "expression", "syntax error"):
            assert fault not in run.stderr, (name, run.stderr)
    summary = (tmp_path / "gpu_check.sh" / "summary.txt").read_text()
    assert "machine" in summary and "eval_half" in summary and "train_amp" in summary
    assert "frcnn-vgg16" in (folder / "gpu_vgg16.sh").read_text()
    text = (folder / "gpu_check.sh").read_text()
    for check in ("pytest", "detect_pipeline.py", "--half", "train_speed.py --device", "--amp",
                  "torch.distributed.run"):  # fmt: skip
        assert check in text, check
