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


def test_busy_clock_counts_overlapping_batches_once():
    import threading
    import time

    from visiontool.engine.predict.inflight import BusyClock

    clock = BusyClock()
    started = time.perf_counter()

    def batch(seconds: float) -> None:
        with clock:
            time.sleep(seconds)

    threads = [threading.Thread(target=batch, args=(0.2,)) for _ in range(2)]
    for thread in threads:  # two batches in the model at once: 0.2 s busy, not 0.4
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.1)  # idle: not counted
    batch(0.1)
    wall = time.perf_counter() - started
    assert 0.29 <= clock.busy_s <= 0.29 + (wall - 0.4) + 0.05
    assert clock.busy_s < wall - 0.09


def test_detect_summary_reports_the_model_rate_and_its_busy_share(tmp_path):
    import json

    from tests.conftest import noise_image, save
    from visiontool.engine.predict.detect import DetectConfig, run_detect

    for i in range(3):
        save(noise_image(64, 48, seed=i), tmp_path / "in" / f"{i}.jpg")
    run_detect(DetectConfig(sources=[str(tmp_path / "in")], out=tmp_path / "o",
                            model="shapes-tinyssd", device="cpu"))  # fmt: skip
    times = json.loads((tmp_path / "o" / "summary.json").read_text())["times"]
    assert 0 < times["model_busy_share"] <= 1
    assert times["model_images_per_s"] >= times["images_per_s"] > 0
    startup = times["startup_s"]  # where a short run's time goes, each part measured
    assert set(startup) == {"process_s", "model_s", "first_result_s", "finish_s"}
    assert all(v >= 0 for v in startup.values()) and startup["model_s"] > 0
    assert startup["first_result_s"] <= times["total_s"]
