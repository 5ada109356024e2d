"""`map_in_order`: several batches in the model at once, results still in input order."""

from __future__ import annotations

import threading
import time

import pytest

from visiontool.engine.predict.inflight import map_in_order


class Recorder:
    """A slow function that notes how many calls overlap and on which threads they ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.calls: list[int] = []

    def __call__(self, item: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
            self.calls.append(item)
        time.sleep(0.002 * (1 + (item * 7) % 3))  # later items often finish first
        with self.lock:
            self.running -= 1
        return item * 10


def test_results_come_in_input_order_with_at_most_inflight_running():
    fn = Recorder()
    out = list(map_in_order(fn, range(20), 3))
    assert out == [(i, i * 10) for i in range(20)]
    assert fn.most == 3 and all(name.startswith("visiontool-model") for name in fn.threads)


def test_skipped_items_pass_through_in_their_place_uncomputed():
    fn = Recorder()
    out = list(map_in_order(fn, range(8), 2, skip=lambda i: i in (0, 3, 7)))
    assert out == [(i, None if i in (0, 3, 7) else i * 10) for i in range(8)]
    assert sorted(fn.calls) == [1, 2, 4, 5, 6]


def test_one_inflight_runs_on_the_calling_thread():
    fn = Recorder()
    assert list(map_in_order(fn, range(3), 1)) == [(0, 0), (1, 10), (2, 20)]
    assert fn.threads == {threading.current_thread().name}
    with pytest.raises(ValueError):
        list(map_in_order(fn, range(3), 0))


def test_closing_early_stops_submitting_and_errors_reach_the_caller():
    fn = Recorder()
    results = map_in_order(fn, range(100), 2)
    assert next(results) == (0, 0)
    results.close()
    assert len(fn.calls) <= 4  # what was in flight when closed, not the other 96

    def fail_on_two(item: int) -> int:
        if item == 2:
            raise RuntimeError("model exploded")
        return item

    with pytest.raises(RuntimeError, match="model exploded"):
        list(map_in_order(fail_on_two, range(5), 2))
