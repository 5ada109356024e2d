"""Draw plots in a forked helper process while the caller goes on working.

Why: `visiontool eval --pred` scores on one core (faster-coco-eval's matching is single-threaded)
and its two default plots cost as much again on that same core, half of it importing matplotlib.
A worker forked before the ground truth is read imports matplotlib and draws the confusion
matrix on the second core while the parent reads and scores, so the plots come almost free
(issue 15: eval >= 4x pycocotools with the default plots).

A job is a module-level function and picklable arguments (small arrays: a 21x21 matrix, 101
points per PR curve). `finish()` returns the results in submission order and re-raises a job's
error in the parent. When no worker can run (one core, no `fork` start method, torch already
imported: forking after its thread pools start is unsafe) or the worker dies, the jobs run in
the caller instead: the same files, only slower.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


def can_fork_worker() -> bool:
    """A second core, `fork` available, and nothing imported that forking would break."""
    return (
        (os.cpu_count() or 1) >= 2
        and sys.platform.startswith("linux")
        and "fork" in multiprocessing.get_all_start_methods()
        and "torch" not in sys.modules
        and os.environ.get("VISIONTOOL_PLOT_WORKER", "1") != "0"
    )


class PlotWorker:
    """`with PlotWorker() as plots: plots.submit(fn, *args); ...; results = plots.finish()`."""

    def __init__(self, enabled: bool = True):
        self._jobs: list[Job] = []
        self._process: Any = None
        self._conn: Any = None
        if enabled and can_fork_worker():
            parent, child = multiprocessing.get_context("fork").Pipe()
            process = multiprocessing.get_context("fork").Process(
                target=_serve, args=(child,), daemon=True, name="visiontool-plots"
            )
            process.start()
            child.close()
            self._process, self._conn = process, parent

    @property
    def forked(self) -> bool:
        return self._process is not None

    def __enter__(self) -> PlotWorker:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(wait=exc_type is None)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue `fn(*args, **kwargs)`; in the worker it starts at once."""
        self._jobs.append((fn, args, kwargs))
        if self._conn is not None:
            try:
                self._conn.send((fn, args, kwargs))
            except (OSError, EOFError):
                self._stop()

    def finish(self) -> list[Any]:
        """Every job's result, in submission order (waits for the worker)."""
        results: list[Any] = []
        for fn, args, kwargs in self._jobs:
            if self._conn is not None:
                try:
                    status, value = self._conn.recv()
                except (OSError, EOFError):  # the worker died: draw the rest here
                    self._stop()
                else:
                    if status == "error":
                        self._jobs = []
                        raise value
                    results.append(value)
                    continue
            results.append(fn(*args, **kwargs))
        self._jobs = []
        self.close()
        return results

    def close(self, wait: bool = True) -> None:
        """Stop the worker: after its current job, or at once (`wait=False`: the caller is
        leaving on an error or Ctrl-C, and a half-drawn plot is never renamed into place)."""
        if self._conn is not None and wait:
            with contextlib.suppress(OSError, EOFError):
                self._conn.send(None)
        self._stop(timeout=5 if wait else 0)

    def _stop(self, timeout: float = 5) -> None:
        if self._process is not None:
            self._conn.close()
            self._process.join(timeout=timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
        self._process = self._conn = None


def _serve(conn: Any) -> None:
    """The worker: import matplotlib now (the slow part), then run jobs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # stopped mid-plot (the parent is leaving on an error): unwind, so the half-written
    # temp file is removed rather than left in the output folder
    signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        from visiontool.io.plotting import preload

        preload()
    except Exception:  # the job will raise the import error where it can be reported
        pass
    while True:
        try:
            job = conn.recv()
        except (OSError, EOFError):
            return
        if job is None:
            return
        fn, args, kwargs = job
        try:
            reply: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - re-raised in the parent
            reply = ("error", error)
        try:
            conn.send(reply)
        except Exception:  # an unpicklable error: send its text
            conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(1)
