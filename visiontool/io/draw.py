"""Every raster picture visiontool draws: one palette, one library (OpenCV), one look.

Annotated detect images, `data show` tiles and the `anchors` pictures all come through here, so
class k has the same colour everywhere (`color(k)`) and labels are the same filled tags with
black or white text, whichever reads better on the tag's colour. Pictures are BGR uint8 numpy
arrays (OpenCV's layout); colours are given as RGB and swapped at the last moment. Line width
and font scale follow the picture's size, so labels read on thumbnails and 4K photos alike.
OpenCV draws and encodes (libjpeg-turbo) several times faster than Pillow, which matters on
detect's hot path; its Hershey font has ASCII glyphs only (Pillow's bundled font is no better
beyond Latin), so other characters show as '?'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visiontool.results import ClassScore, Detection

# Distinct, colour-blind-friendly-ish palette (RGB), cycled by class id.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128), (255, 225, 25),
)  # fmt: skip
# Blank canvases (anchor pictures) are dark: the palette's bright colours, most of its first
# dozen, stand out on it, where several (lime, pink, lavender, beige) vanish on white.
CANVAS = (40, 40, 40)
FAINT = (110, 110, 110)  # context drawn under the coloured boxes (grid dots, box samples)


def color(class_id: int) -> tuple[int, int, int]:
    """The RGB colour of class (or anchor shape) `class_id`: the same in every picture."""
    return PALETTE[class_id % len(PALETTE)]


def _bgr(rgb: Sequence[int]) -> tuple[int, int, int]:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def line_style(height: int, width: int) -> tuple[int, float]:
    """(line thickness, font scale) for a picture of this size."""
    side = min(height, width)
    return max(1, round(side / 320)), max(0.35, side / 900)


def to_bgr_array(image: Any) -> Any:
    """uint8 (3, H, W) RGB tensor -> new contiguous (H, W, 3) BGR numpy array for OpenCV.

    `cv2.cvtColor` does the channel swap and the copy in one SIMD pass (~4x faster than
    numpy's reversed-stride copy on a 1080p image)."""
    import cv2
    import numpy as np

    if image.device.type != "cpu":  # decoded on the GPU (`io.device_decode`)
        image = image.cpu()
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # free for decoder layout
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def to_rgb_tensor(bgr: Any) -> Any:
    """(H, W, 3) BGR array -> uint8 (3, H, W) RGB tensor (the inverse of `to_bgr_array`)."""
    import cv2
    import torch

    return torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


def blank(height: int, width: int, rgb: Sequence[int] = CANVAS) -> Any:
    """A plain (H, W, 3) BGR canvas."""
    import numpy as np

    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = _bgr(rgb)
    return canvas


def upscaled(bgr: Any, min_side: int) -> tuple[Any, float]:
    """A copy at least `min_side` on its long side (nearest neighbour, so pixels stay crisp)
    and the factor applied; small pictures are drawn larger so their labels stay readable."""
    import cv2

    height, width = bgr.shape[:2]
    factor = max(1.0, min_side / max(height, width))
    if factor == 1.0:
        return bgr.copy(), 1.0
    size = (round(width * factor), round(height * factor))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_NEAREST), factor


def draw_box(
    bgr: Any,
    box: Sequence[float],
    rgb: Sequence[int],
    *,
    thickness: int,
    label: str | None = None,
    font_scale: float | None = None,
) -> Any:
    """One xyxy box (pixels) in place, with a filled `label` tag on its top-left corner. A box
    with a non-finite corner is not drawn; corners far outside the picture are pulled in (OpenCV
    takes 32-bit ints only)."""
    import cv2

    bgr_color = _bgr(rgb)
    corners = pixel_box(box, *bgr.shape[:2])
    if corners is None:
        return bgr
    x1, y1, x2, y2 = corners
    cv2.rectangle(bgr, (x1, y1), (x2, y2), bgr_color, thickness, cv2.LINE_AA)
    if label:
        scale = font_scale if font_scale is not None else line_style(*bgr.shape[:2])[1]
        _tag(bgr, label, (x1, y1), bgr_color, scale, thickness)
    return bgr


def pixel_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """`box` as int pixels, each corner kept within a picture's size beyond its edges; None if a
    corner is not a finite number."""
    import math

    values = [float(v) for v in box]
    if not all(math.isfinite(v) for v in values):
        return None
    x1, y1, x2, y2 = (
        int(round(min(max(v, -side), 2 * side)))
        for v, side in zip(values, (width, height, width, height), strict=True)
    )
    return x1, y1, x2, y2


def draw_boxes(
    bgr: Any,
    boxes: Sequence[Sequence[float]],
    colors: Sequence[Sequence[int]],
    labels: Sequence[str] | None = None,
    *,
    thickness: int | Sequence[int] | None = None,
    font_scale: float | None = None,
) -> Any:
    """Boxes in place (RGB `colors`, one per box; `thickness` one for all or one per box), then
    their label tags if given, on top of every line. Tags are placed in the boxes' order: one
    that would cover an earlier one moves down until it does not, so list first the boxes
    whose tags matter most."""
    default_thickness, default_scale = line_style(*bgr.shape[:2])
    font_scale = font_scale or default_scale
    widths = (
        [int(w) for w in thickness]
        if isinstance(thickness, Sequence)
        else [thickness or default_thickness] * len(boxes)
    )
    for box, rgb, width in zip(boxes, colors, widths, strict=True):
        draw_box(bgr, box, rgb, thickness=width)
    if labels:
        placed: list[tuple[int, int, int, int]] = []
        for box, rgb, width, label in zip(boxes, colors, widths, labels, strict=True):
            if not label:  # an empty label: the box alone
                continue
            corner = (int(round(box[0])), int(round(box[1])))
            _tag(bgr, label, corner, _bgr(rgb), font_scale, width, placed=placed)
    return bgr


TAG_AREA = 0.3  # most of a detect picture that tags may cover (thumbnails with many boxes)
HIDES = 0.25  # a tag covering more of another box than this hides it (a corner does not)


def detect_style(height: int, width: int) -> tuple[int, float]:
    """(line thickness, font scale) of detect's pictures: 1 px lines and a small font (about
    8 px capitals at 256 px, the smallest still readable at 100%; 6 px on tiny thumbnails),
    growing with the image (3 px lines, ~26 px capitals at 1080p)."""
    side = min(height, width)
    return max(1, round(side / 400)), min(1.2, max(0.25, side / 760))


def fit_label(text: str, short: str, max_width: int, scale: float, thickness: int) -> str:
    """`text` when its tag fits in `max_width` px, else `short` (the class name alone), else
    `short` cut to fit (at least 3 characters)."""
    import cv2

    font, ink = cv2.FONT_HERSHEY_SIMPLEX, max(1, thickness - 1)
    for candidate in (text, short):
        if cv2.getTextSize(candidate, font, scale, ink)[0][0] + 2 * _pad(thickness) <= max_width:
            return candidate
    per_char = cv2.getTextSize("m", font, scale, ink)[0][0]
    return short[: max(3, (max_width - 2 * _pad(thickness)) // max(1, per_char))]


Rect = tuple[int, int, int, int]


def detection_tags(
    detections: Sequence[Detection], height: int, width: int
) -> list[tuple[str, Rect, int]]:
    """Where detect puts its label tags on a `height` x `width` image: (text, (x1, y1, x2, y2),
    index into `detections`) for each detection that gets one.

    A tag goes above its box's top-left corner; when that spot is taken by an earlier tag or
    would hide more than `HIDES` of a box (its own too: a small box's tag goes outside), inside
    the box's top edge, then below the box, then inside its bottom edge (the first that covers no
    tag and hides the least); failing all four it slides down from the first until it covers
    no tag. Tags stay inside the image and are no wider than half of it (the score, then
    letters of the name, are dropped on thumbnails); a tag with no free room, or once tags
    cover `TAG_AREA` of the picture, is left out (its box is still drawn). Detections come
    best first, so the best keep their tags."""
    import numpy as np

    thickness, font_scale = detect_style(height, width)
    boxes = [pixel_box(det.box, height, width) for det in detections]
    drawn = np.array([b for b in boxes if b is not None], dtype=np.float64).reshape(-1, 4)
    areas = box_areas(drawn)  # once a picture, not once a candidate spot
    placed = np.zeros((len(detections), 4), dtype=np.float64)  # the first `count` rows are tags
    count, covered = 0, 0
    tags = []
    max_width = max(24, width // 2)
    budget = TAG_AREA * height * width
    for index, det in enumerate(detections):
        if covered >= budget:
            break  # tags already cover their share of the picture: the rest get boxes only
        if boxes[index] is None:
            continue  # a box with a NaN corner is not drawn either
        text = fit_label(f"{det.label} {det.score:.2f}", det.label, max_width, font_scale,
                         thickness)  # fmt: skip
        rect = _tag_spot(text, boxes[index], (drawn, areas), placed[:count], font_scale,
                         thickness, height, width)  # fmt: skip
        if rect is None:
            continue
        placed[count] = rect
        count += 1
        covered += (rect[2] - rect[0]) * (rect[3] - rect[1])
        tags.append((text, rect, index))
    return tags


def _tag_spot(
    text: str,
    box: Sequence[int],
    boxes: tuple[Any, Any],
    placed: Any,
    scale: float,
    thickness: int,
    height: int,
    width: int,
) -> Rect | None:
    """The tag rectangle for `box` (see `detection_tags`), or None when none is free; `boxes`
    ((N, 4) array, their areas) are every drawn detection's, its own included (a tag inside a
    small box hides its object); `placed` (an (M, 4) array) the tags so far."""
    x1, y1, x2, y2 = _tag_rect(text, (box[0], box[1]), scale, thickness, height, width, below=True)
    h = y2 - y1
    spots = []
    for order, top in enumerate((box[1] - h, box[1], box[3], box[3] - h)):
        top = max(0, min(top, height - h))
        rect = (x1, top, x2, top + h)
        if not _covers_any(rect, placed):
            spots.append((round(_hidden(rect, *boxes), 1), order, rect))
    if spots:
        return min(spots)[2]
    first = max(0, min(box[1] - h, height - h))
    top = _free_top(placed, x1, first, x2, h, height)
    return None if top is None else (x1, top, x2, top + h)


def _covers_any(rect: Rect, rects: Any) -> bool:
    """Whether `rect` overlaps any row of `rects` (M, 4) by a positive area."""
    return bool(
        (
            (rects[:, 0] < rect[2]) & (rect[0] < rects[:, 2])
            & (rects[:, 1] < rect[3]) & (rect[1] < rects[:, 3])
        ).any()
    )  # fmt: skip


def box_areas(boxes: Any) -> Any:
    """Areas of `boxes` (N, 4), inverted ones 0."""
    import numpy as np

    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _hidden(rect: Rect, boxes: Any, areas: Any) -> float:
    """How much of `boxes` (N, 4; `areas` theirs) a tag at `rect` hides: the sum of the
    covered fractions above `HIDES` (vectorised: a picture may hold hundreds of boxes)."""
    import numpy as np

    w = np.clip(np.minimum(boxes[:, 2], rect[2]) - np.maximum(boxes[:, 0], rect[0]), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], rect[3]) - np.maximum(boxes[:, 1], rect[1]), 0, None)
    fractions = w * h / np.maximum(areas, 1.0)
    return float(fractions[fractions > HIDES].sum())


def draw_outlines(bgr: Any, boxes: Any, rgb: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Thin unlabelled boxes (xyxy, e.g. the ground truth under predictions), in place."""
    import cv2

    for box in boxes:
        corners = pixel_box(box, *bgr.shape[:2])
        if corners is not None:
            cv2.rectangle(bgr, corners[:2], corners[2:], rgb[::-1], 1)
    return bgr


def draw_detections(bgr: Any, detections: Sequence[Detection]) -> Any:
    """Draw boxes and 'label score' tags in place on a BGR array; returns it.

    Line width and font follow the image's size (`detect_style`); every box is drawn before
    any tag, so lines never cross a label; tags are placed by `detection_tags`."""
    height, width = bgr.shape[:2]
    thickness, font_scale = detect_style(height, width)
    for det in detections:
        draw_box(bgr, det.box, color(det.class_id), thickness=thickness)
    for text, (x1, y1, _, _), index in detection_tags(detections, height, width):
        rgb = color(detections[index].class_id)
        _tag(bgr, text, (x1, y1), _bgr(rgb), font_scale, thickness, below=True)
    return bgr


def draw_classes(bgr: Any, classes: Sequence[ClassScore]) -> Any:
    """Write the top-k classes ('label score') in the top-left corner."""
    return draw_tags(bgr, [(f"{c.label} {c.score:.2f}", c.class_id) for c in classes])


def draw_tags(
    bgr: Any,
    tags: Sequence[tuple[str, int]],
    *,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> Any:
    """(text, class id) tags stacked in the top-left corner, each in its class's colour."""
    default_thickness, default_scale = line_style(*bgr.shape[:2])
    thickness = thickness or default_thickness
    font_scale = font_scale or default_scale
    y = 0
    for text, class_id in tags:
        y += _tag(bgr, text, (0, y), _bgr(color(class_id)), font_scale, thickness, below=True)
    return bgr


def draw_points(
    bgr: Any, points: Sequence[Sequence[float]], rgb: Sequence[int], *, radius: int = 0
) -> Any:
    """Dots in place: single pixels (radius 0, fast for thousands) or filled discs."""
    import cv2
    import numpy as np

    if radius <= 0:
        xy = np.rint(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int64)
        height, width = bgr.shape[:2]
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        bgr[xy[keep, 1], xy[keep, 0]] = _bgr(rgb)
        return bgr
    for x, y in points:
        cv2.circle(bgr, (int(round(x)), int(round(y))), radius, _bgr(rgb), -1, cv2.LINE_AA)
    return bgr


def _tag(
    bgr: Any,
    text: str,
    corner: tuple[int, int],
    color: tuple[int, int, int],
    scale: float,
    thickness: int,
    *,
    below: bool = False,
    placed: list[tuple[int, int, int, int]] | None = None,
) -> int:
    """A filled label box (BGR `color`) with text at `corner`: above the corner unless there is
    no room, and always inside the picture. With `placed` (x1, y1, x2, y2 of the tags drawn so
    far), it moves down half a tag height at a time past any it would cover (staying put when no
    free spot is found) and is added to the list. Returns the tag's height."""
    import cv2

    height, width = bgr.shape[:2]
    x, top, right, bottom = _tag_rect(text, corner, scale, thickness, height, width, below=below)
    if placed is not None:
        import numpy as np

        tags = np.asarray(placed, dtype=np.float64).reshape(-1, 4)
        free = _free_top(tags, x, top, right, bottom - top, height)
        top, bottom = (top, bottom) if free is None else (free, free + bottom - top)
        placed.append((x, top, right, bottom))
    font, pad = cv2.FONT_HERSHEY_SIMPLEX, _pad(thickness)
    text_thickness = max(1, thickness - 1)
    cv2.rectangle(bgr, (x, top), (right, bottom), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    th = cv2.getTextSize(text, font, scale, text_thickness)[0][1]
    cv2.putText(bgr, text, (x + pad, top + pad + th), font, scale, ink, text_thickness,
                cv2.LINE_AA)  # fmt: skip
    return bottom - top


def _tag_rect(
    text: str,
    corner: tuple[int, int],
    scale: float,
    thickness: int,
    height: int,
    width: int,
    *,
    below: bool = False,
) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of a tag at `corner`: above it unless there is no room (or `below`),
    moved inside a `height` x `width` picture."""
    import cv2

    (tw, th), baseline = cv2.getTextSize(
        text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thickness - 1)
    )
    pad = _pad(thickness)
    box_h = th + baseline + 2 * pad
    x, y = corner
    x = max(0, min(x, width - tw - 2 * pad))
    top = y if below or y - box_h < 0 else y - box_h
    top = max(0, min(top, height - box_h))
    return x, top, x + tw + 2 * pad, top + box_h


def _pad(thickness: int) -> int:
    return max(2, thickness)


def _free_top(placed: Any, x1: int, top: int, x2: int, h: int, limit: int) -> int | None:
    """The first top at or below `top` where an (x1..x2, h tall) tag covers no row of `placed`
    (an (M, 4) array of tags; None when there is no such top)."""
    for candidate in range(top, limit - h + 1, max(1, h // 2)):
        if not _covers_any((x1, candidate, x2, candidate + h), placed):
            return candidate
    return None


ENCODER_MAX_SIDE = {".jpg": 65_535, ".jpeg": 65_535, ".jpe": 65_535, ".png": 1_000_000}
"""The longest side OpenCV's encoders take: JPEG's 16-bit sizes, libpng's default user limit."""


def encode_image(
    bgr: Any, suffix: str, *, jpeg_quality: int = 90, png_compression: int = 1
) -> bytes:
    """Encode for saving with the input's format where OpenCV can write it (else PNG)."""
    import cv2

    suffix = suffix.lower()
    height, width = bgr.shape[:2]
    limit = ENCODER_MAX_SIDE.get(suffix)
    if limit is not None and max(height, width) > limit:  # before libpng/libjpeg print to stderr
        raise ValueError(f"{width}x{height} px: {suffix} files hold at most {limit} px a side")
    params: list[int] = []
    if suffix in (".jpg", ".jpeg", ".jpe"):
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    elif suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    ok, buffer = cv2.imencode(suffix, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {suffix}")
    return buffer.tobytes()


def save_image(bgr: Any, path: str | Path) -> Path:
    """Write a picture atomically, encoded by its suffix (a one-off picture: PNGs are
    compressed harder than detect's streamed copies)."""
    from visiontool.io.atomic import write_bytes

    path = Path(path)
    return write_bytes(path, encode_image(bgr, path.suffix or ".png", png_compression=6))


def output_suffix(suffix: str) -> str:
    """The suffix an annotated copy is saved with: the input's, or .png where OpenCV can't."""
    suffix = suffix.lower()
    return suffix if suffix in (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif",
                                ".tiff") else ".png"  # fmt: skip
