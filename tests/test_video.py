"""Videos and streams as `detect` sources: frames, strides, the annotated mp4, JSONL lines with
frame and time_s, broken files, dropped streams (reconnects with backoff) and Ctrl-C leaving a
video that plays. The videos are made here with OpenCV from synthetic shapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from visiontool.io.sources import plan_sources, source_kind, stream_name
from visiontool.io.video import Frame, FrameError, read_frames

MODEL = ["--model", "shapes-tinyssd", "--workers", "0"]
FPS = 10.0


def shapes_frames(n: int, size: int = 96) -> list[np.ndarray]:
    """`n` BGR frames: a red square and a blue circle that move on grey."""
    frames = []
    for i in range(n):
        frame = np.full((size, size, 3), 128, np.uint8)
        x = 8 + (i * 3) % (size - 40)
        cv2.rectangle(frame, (x, 10), (x + 24, 34), (0, 0, 255), -1)
        cv2.circle(frame, (size - 20, 20 + (i * 2) % (size - 40)), 12, (255, 0, 0), -1)
        frames.append(frame)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "mp4v") -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def video_facts(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames actually decodable, fps, (width, height)) of a written video."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, fps, size


def jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


# --- sources -------------------------------------------------------------------------------


def test_videos_cameras_and_urls_are_sources(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", shapes_frames(3))
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", shapes_frames(1)[0])[1].tobytes())
    items = list(plan_sources([str(tmp_path)]))
    assert [(i.rel, i.kind) for i in items] == [("a.png", "image"), ("clip.mp4", "video")]
    assert source_kind(str(clip)) == "video" and source_kind("0") == "stream"
    assert source_kind("rtsp://cam.local/live") == "stream"
    assert stream_name("0") == "camera0"
    assert stream_name("rtsp://user:secret@cam.local:554/live/1") == "rtsp_cam.local_554_live_1"
    assert [i.kind for i in plan_sources(["rtsp://cam.local/x", "1"])] == ["stream", "stream"]


# --- reading frames ------------------------------------------------------------------------


def test_every_stride_th_frame_with_its_number_and_time(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", shapes_frames(10))
    got = list(read_frames(str(clip), stride=3))
    assert all(isinstance(f, Frame) for f in got)
    assert [f.number for f in got] == [0, 3, 6, 9]
    assert [f.time_s for f in got] == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert got[0].image.shape == (96, 96, 3) and got[0].info.fps == pytest.approx(FPS)
    # RGB out: the red square is red
    assert tuple(got[0].image[20, 20]) == pytest.approx((255, 0, 0), abs=40)


def test_a_truncated_file_gives_its_frames_then_an_error(tmp_path):
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    whole = write_video(tmp_path / "whole.avi", noisy, fourcc="MJPG").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    got = list(read_frames(str(cut)))
    frames = [f for f in got if isinstance(f, Frame)]
    assert 5 <= len(frames) < 30
    assert isinstance(got[-1], FrameError) and "truncated" in got[-1].message
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 50)
    (only,) = read_frames(str(garbage))
    assert isinstance(only, FrameError) and "cannot open video" in only.message


class FakeCapture:
    """A stream that gives `frames` frames, then drops."""

    def __init__(self, frames: int) -> None:
        self.left = frames
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 25.0, cv2.CAP_PROP_FRAME_WIDTH: 8.0,
                cv2.CAP_PROP_FRAME_HEIGHT: 6.0}.get(prop, 0.0)  # fmt: skip

    def grab(self) -> bool:
        self.left -= 1
        return self.left >= 0

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((6, 8, 3), np.uint8)

    def release(self) -> None:
        self.released = True


def test_a_dropped_stream_reconnects_with_backoff_then_reports():
    opened, waits = [], []

    def opener(spec):
        opened.append(FakeCapture(frames=2 if len(opened) < 2 else 0))
        return opened[-1]

    got = list(read_frames("rtsp://cam/live", opener=opener, sleep=waits.append))
    frames = [f for f in got if isinstance(f, Frame)]
    assert len(frames) == 4  # 2 before the drop, 2 after the first reconnect
    assert waits == [0.5, 0.5, 1.0, 2.0]  # the wait resets once frames flow again
    assert isinstance(got[-1], FrameError) and "did not come back" in got[-1].message
    assert all(c.released for c in opened)


# --- detect --------------------------------------------------------------------------------


def test_detect_a_video_writes_jsonl_frames_and_an_annotated_mp4(cli, tmp_path):
    (tmp_path / "in").mkdir()
    clip = write_video(tmp_path / "in" / "clip.mp4", shapes_frames(9))
    image = tmp_path / "in" / "still.png"
    image.write_bytes(cv2.imencode(".png", shapes_frames(1)[0])[1].tobytes())
    out = tmp_path / "out"
    result = cli("detect", clip, image, *MODEL, "--vid-stride", "2", "--out", out)
    assert result.exit_code == 0, result.output
    lines = jsonl(out)
    frames = [line for line in lines if "frame" in line]
    assert [f["frame"] for f in frames] == [0, 2, 4, 6, 8]
    assert [f["time_s"] for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert all(f["width"] == 96 and f["error"] is None for f in frames)
    assert "frame" not in lines[-1] and lines[-1]["image"].endswith("still.png")
    assert frames[0]["saved"] == ["clip.mp4"]  # listed once, for --exist-ok to clean up
    count, fps, size = video_facts(out / "clip.mp4")
    assert (count, size) == (5, (96, 96))
    assert fps == pytest.approx(FPS / 2)  # plays at the source's speed
    assert (out / "still.png").exists()
    assert not list(out.glob(".*part*"))
    assert "frame 1/9 " in result.output and "frame 9/9 " in result.output
    assert "1 image, 5 video frames," in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["images"] == 6 and summary["counts"]["frames"] == 5


def test_no_save_img_writes_no_video_and_a_broken_video_is_a_failed_input(cli, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", shapes_frames(4))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 300)
    out = tmp_path / "out"
    result = cli("detect", clip, broken, *MODEL, "--no-save-img", "--out", out)
    assert result.exit_code == 1, result.output
    lines = jsonl(out)
    assert len(lines) == 5
    assert "cannot open video" in lines[-1]["error"]
    assert not list(out.glob("*.mp4"))
    assert "Traceback" not in result.output


def test_bad_vid_stride_is_one_line_exit_2(cli, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", shapes_frames(2))
    result = cli("detect", clip, *MODEL, "--vid-stride", "0", "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "--vid-stride must be >= 1" in result.output


@pytest.mark.slow
def test_ctrl_c_leaves_a_video_that_plays(tmp_path):
    clip = write_video(tmp_path / "long.mp4", shapes_frames(1500, size=128))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "visiontool", "detect", str(clip), *MODEL, "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each frame's line as it is written

    # pytest-xdist workers ignore SIGINT and a child inherits that: give it a shell's default
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=Path(__file__).parents[1], env=env,
                            preexec_fn=default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until frames are being written
        if line.startswith("frame 20/") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    count, _, size = video_facts(out / "long.mp4")
    assert 20 <= count < 1500 and size == (128, 128)
    assert not list(out.glob(".*part*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] is True
