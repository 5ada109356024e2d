"""Result types: one `ImageResult` per input image, with its detections or top-k classes.

These are plain data: the predictor produces them, writers consume them, and `to_dict()` is the
JSON schema of `predictions.jsonl` (see README).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # absolute pixel xyxy in the displayed image
    score: float
    class_id: int
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "class_id": self.class_id,
            "label": self.label,
        }


@dataclass(frozen=True)
class ClassScore:
    class_id: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"class_id": self.class_id, "label": self.label, "score": round(self.score, 5)}


@dataclass
class ImageResult:
    """Everything known about one input: what was found, how long it took, or why it failed."""

    image: str
    rel: str
    width: int = 0
    height: int = 0
    detections: list[Detection] | None = None
    classes: list[ClassScore] | None = None
    error: str | None = None
    speed: dict[str, float] = field(default_factory=dict)  # ms per stage
    frame: int | None = None  # a video frame's number in its source (from 0); None: an image
    time_s: float | None = None  # that frame's time in the video (live: since the start)
    video: Any = field(default=None, repr=False, compare=False)  # io.video.VideoInfo

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def time_ms(self) -> float:
        return sum(self.speed.values())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"image": self.image}
        if self.frame is not None:
            data["frame"] = self.frame
            data["time_s"] = self.time_s
        data.update(width=self.width, height=self.height)
        if self.classes is not None:
            data["classes"] = [c.to_dict() for c in self.classes]
        else:
            data["detections"] = [d.to_dict() for d in self.detections or []]
        data["time_ms"] = round(self.time_ms, 2)
        data["error"] = self.error
        return data
