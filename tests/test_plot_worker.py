"""The plot worker: jobs drawn in a forked process come back in order, errors surface in the
parent, a dead worker falls back to drawing in the caller, and `eval --pred` writes the same
PNG bytes with and without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from visiontool.io import plot_worker
from visiontool.io.plot_worker import PlotWorker

FORK = sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def forking(monkeypatch):
    """The test process has imported torch (other tests); the jobs here never touch it."""
    if not FORK:
        pytest.skip("the worker forks only on Linux with two or more cores")
    monkeypatch.setattr(plot_worker, "can_fork_worker", lambda: True)


def test_jobs_run_in_the_worker_in_order(forking):
    with PlotWorker() as plots:
        assert plots.forked
        for x in (2, 3, 4):
            plots.submit(pid_and_square, x)
        results = plots.finish()
    assert [square for _, square in results] == [4, 9, 16]
    assert {pid for pid, _ in results} != {os.getpid()}  # drawn elsewhere
    assert not plots.forked  # finished: the worker is gone


def test_a_jobs_error_is_raised_in_the_parent(forking):
    with PlotWorker() as plots:
        plots.submit(fail, "bad plot")
        with pytest.raises(ValueError, match="bad plot"):
            plots.finish()


def test_a_dead_worker_falls_back_to_the_caller(forking):
    with PlotWorker() as plots:
        plots._process.kill()  # e.g. the OOM killer
        plots._process.join()
        plots.submit(pid_and_square, 5)
        (pid, square), = plots.finish()  # fmt: skip
    assert (pid, square) == (os.getpid(), 25)


def test_disabled_or_unsafe_runs_in_the_caller(monkeypatch):
    with PlotWorker(enabled=False) as plots:
        plots.submit(pid_and_square, 3)
        assert plots.finish() == [(os.getpid(), 9)]
    import torch  # noqa: F401

    assert not plot_worker.can_fork_worker()  # forking after torch started is not done


def test_eval_writes_the_same_plots_with_and_without_the_worker(tmp_path):
    from tests.test_eval_cli import write_gt, write_jsonl

    gt, pred = write_gt(tmp_path), write_jsonl(tmp_path)
    code = (
        "import sys\n"
        "from visiontool.io.plot_worker import can_fork_worker\n"
        "from visiontool.cli.main import run\n"
        "print('FORK', can_fork_worker())\n"
        "try:\n"
        "    run(['eval', '--data', sys.argv[1], '--pred', sys.argv[2], '--out', sys.argv[3]])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
    )
    outputs = {}
    for flag in ("1", "0"):
        out = tmp_path / f"out{flag}"
        env = {**os.environ, "VISIONTOOL_PLOT_WORKER": flag}
        proc = subprocess.run(
            [sys.executable, "-c", code, str(gt), str(pred), str(out)],
            capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parents[1],
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert f"FORK {flag == '1' and FORK}" in proc.stdout
        outputs[flag] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert set(outputs["1"]) == {"metrics.json", "pr_curve.png", "confusion_matrix.png",
                                 "report.html"}  # fmt: skip
    assert outputs["1"] == outputs["0"]


def slow_atomic_png(path: str, started: str) -> None:
    """Writes through atomic_write and stalls mid-write (a big plot being saved)."""
    import time

    from visiontool.io.atomic import atomic_write

    def write(handle) -> None:
        handle.write(b"\x89PNG partial")
        Path(started).touch()
        time.sleep(30)

    atomic_write(path, write)


def test_a_worker_stopped_mid_plot_leaves_no_temp_file(forking, tmp_path):
    """The parent leaving on an error or Ctrl-C stops the worker at once: the half-written
    temp file next to the plot is removed, not left in --out."""
    import time

    started = tmp_path / "started"
    plots = PlotWorker()
    plots.submit(slow_atomic_png, str(tmp_path / "pr.png"), str(started))
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.glob(".pr.png.*.tmp")), "the job should be mid-write"
    plots.close(wait=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started"]


def test_eval_draws_the_same_pr_curve_from_voc_when_iou_05_is_absent(tmp_path):
    from tests.test_eval_cli import invoke, write_gt, write_jsonl

    gt, pred = write_gt(tmp_path), write_jsonl(tmp_path)
    for name, thresholds in (("coco", "0.5,0.75"), ("voc", "0.6,0.75")):
        out = tmp_path / name
        result = invoke("--data", str(gt), "--pred", str(pred), "--out", str(out),
                        "--iou-thresholds", thresholds)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (out / "pr_curve.png").stat().st_size > 1000
        assert (out / "confusion_matrix.png").stat().st_size > 1000
