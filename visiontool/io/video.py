"""Video files, cameras and network streams as sources of frames, and annotated video output.

`read_frames` opens a source with OpenCV (whatever its FFmpeg build decodes: mp4, avi, mkv,
mov, ...; a camera index such as `0`; an `rtsp://` or `http://` URL) and yields every
`stride`-th frame as an RGB array with its frame number and time. Skipped frames are only
grabbed, not converted. Problems are yielded, not raised, so the pipeline reports them like an
unreadable image: a source that does not open, a file that ends before the frame count its
header gives (truncated or corrupt: the frames before are still processed), a stream that
drops and does not come back after `reconnects` tries with growing waits.

`VideoWriter` writes annotated frames to an mp4 (MPEG-4 Part 2, `mp4v`: the codec every
OpenCV build can encode) under a temporary name and renames it when closed, so an interrupted
run (Ctrl-C closes the writers) still leaves a file that plays, and never a half-written one
under the final name.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
STREAM_SCHEMES = ("rtsp://", "rtmp://", "rtp://", "udp://", "tcp://", "http://", "https://")
DEFAULT_FPS = 30.0  # a camera or stream that does not say
RECONNECTS = 3
BACKOFF_S = 0.5  # first wait before reconnecting a dropped stream; doubles each try
FRAME_COUNT_SLACK = 1  # container frame counts can be one off at the end

# FFmpeg prints decoder complaints ("[mjpeg @ 0x...] dqt: invalid len") straight to stderr;
# the problems are reported as one line each instead. Set before OpenCV opens a capture.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_stream_spec(spec: str) -> bool:
    """A camera index (`0`, `1`...) that is not a file here, or a stream URL."""
    return spec.lower().startswith(STREAM_SCHEMES) or (spec.isdigit() and not Path(spec).exists())


@dataclass(frozen=True)
class VideoInfo:
    """What a video source says about itself (frames: 0 when unknown, as for streams)."""

    fps: float
    width: int
    height: int
    frames: int
    live: bool  # a camera or stream: no end, no frame count, reconnect when it drops
    stride: int = 1  # every stride-th frame is processed (--vid-stride)


@dataclass
class Frame:
    """One decoded frame: `number` counts from 0 in the source (skipped frames included)."""

    number: int
    time_s: float
    image: Any  # uint8 (H, W, 3) RGB array
    info: VideoInfo


@dataclass
class FrameError:
    """Why a source gave no (more) frames; `frames` is how many it gave before."""

    message: str
    frames: int


def open_capture(spec: str) -> Any:
    """An OpenCV capture for a file path, a camera index or a URL."""
    import cv2

    # OpenCV's own warnings ("can't open camera by index") would interleave with the one-line
    # report of the same problem
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    source: Any = int(spec) if spec.isdigit() and not Path(spec).exists() else spec
    return cv2.VideoCapture(source)


def describe_source(spec: str) -> str:
    """'camera 0', 'stream rtsp://...' or 'video path' for messages."""
    if spec.isdigit() and not Path(spec).exists():
        return f"camera {spec}"
    return f"stream {spec}" if is_stream_spec(spec) else f"video {spec}"


def capture_info(capture: Any, live: bool) -> VideoInfo:
    import cv2

    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not 0.0 < fps < 1000.0:  # unknown or nonsense (some streams say 90000)
        fps = DEFAULT_FPS
    frames = 0 if live else max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    return VideoInfo(
        fps=fps,
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        frames=frames,
        live=live,
    )


def read_frames(
    spec: str,
    *,
    stride: int = 1,
    live: bool | None = None,
    reconnects: int = RECONNECTS,
    backoff_s: float = BACKOFF_S,
    opener: Callable[[str], Any] = open_capture,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Frame | FrameError]:
    """Every `stride`-th frame of `spec` (module docstring); a `FrameError` last when the
    source failed. `opener` and `sleep` are replaceable for tests."""
    import cv2

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    live = is_stream_spec(spec) if live is None else live
    capture = opener(spec)
    if capture is None or not capture.isOpened():
        what = describe_source(spec)
        hint = "no such device, or in use?" if what.startswith("camera") else (
            "unreachable?" if live else "not a video OpenCV can decode?")  # fmt: skip
        yield FrameError(f"cannot open {what} ({hint})", 0)
        return
    info = dataclasses.replace(capture_info(capture, live), stride=stride)
    number, given, started, tries = 0, 0, time.monotonic(), 0
    try:
        while True:
            if not capture.grab():
                if not live:
                    break
                tries += 1
                if tries > reconnects:
                    yield FrameError(
                        f"stream {spec} dropped after {given} frames and did not come back "
                        f"({reconnects} reconnects)",
                        given,
                    )
                    return
                capture.release()
                sleep(backoff_s * 2 ** (tries - 1))
                capture = opener(spec)
                continue
            tries = 0
            if number % stride == 0:
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    break
                time_s = time.monotonic() - started if live else number / info.fps
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(number, round(time_s, 4), rgb, info)
                given += 1
            number += 1
    finally:
        capture.release()
    if info.frames and number + FRAME_COUNT_SLACK < info.frames:
        yield FrameError(
            f"video {spec} ends after {number} of its {info.frames} frames (truncated or "
            "corrupt); the frames before were processed",
            given,
        )
    elif number == 0:
        yield FrameError(f"video {spec} has no frames that decode", 0)


class VideoWriter:
    """An mp4 of annotated frames at `path`: written as `.<name>.part.mp4`, renamed on close."""

    def __init__(self, path: Path, *, fps: float, size: tuple[int, int]):
        import cv2

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        self.size = size
        self.frames = 0
        self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                       float(fps), size)  # fmt: skip
        if not self._writer.isOpened():
            raise OSError(f"cannot write video {path} (OpenCV has no mp4v encoder here?)")

    def write(self, bgr: Any) -> None:
        """One frame (uint8 (H, W, 3) BGR); a frame of another size is resized to the
        video's (a stream may change resolution midway; mp4 cannot)."""
        import cv2

        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file (its index is written now) and give it its name; None when no
        frame was written (nothing is left behind)."""
        self._writer.release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        os.replace(self.tmp, self.path)
        return self.path
