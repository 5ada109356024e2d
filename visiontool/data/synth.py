"""Deterministic synthetic data: shapes for detection and classification, digits like MNIST.

Everything offline and seeded: image i draws from `numpy.random.default_rng([seed, i])`, so the
same seed gives byte-identical files and images do not depend on each other. Shapes are drawn as
anti-aliased polygons with OpenCV on noise, gradient and texture backgrounds, with colours kept
apart from the background and occlusion capped so every object stays recognisable (at least
60% of it visible). Boxes are pixel-tight around each whole shape.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.errors import ConfigError
from visiontool.io.paths import prepare_out
from visiontool.runtime import check_budget

SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
DIGITS = [str(d) for d in range(10)]
MIN_VISIBLE = 0.6
DEFAULT_OBJECT_SIZE = (0.04, 0.5)  # a shape's extent, as fractions of the image side
MIN_CONTRAST = 90.0
JPEG_QUALITY = 92


# ---------------------------------------------------------------- public API


def synth_detection(
    out: str | Path | None,
    *,
    n: int,
    imgsz: int = 256,
    fmt: str = "coco",
    seed: int = 0,
    val_fraction: float = 0.2,
    max_objects: int = 6,
    object_size: tuple[float, float] = DEFAULT_OBJECT_SIZE,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Write `n` shape images with boxes in `fmt` (coco, voc or yolo) with train/val splits,
    1 to `max_objects` shapes each, each shape's extent log-uniform within `object_size`
    (fractions of the image side; never under 8 px). `out` must be new or empty (None: the next
    runs/data/synth/exp*); with `exist_ok` an earlier synth set there is replaced (see
    `SYNTH_OWNED`)."""

    from visiontool import registry

    _check(n, imgsz, val_fraction)
    if max_objects < 1:
        raise ConfigError(f"--max-objects must be >= 1, got {max_objects}")
    object_size = check_object_size(object_size)
    writer = registry.get("format", fmt)
    if writer.task != "detect":
        raise ConfigError(f"--format must be coco, voc or yolo for detection, got {fmt!r}")
    with prepare_out(_out_path(out), "data/synth", exist_ok=exist_ok, owned=SYNTH_OWNED) as claimed:
        return _synth_detection(
            claimed.path, writer, n, imgsz, fmt, seed, val_fraction, max_objects, object_size
        )


def _synth_detection(
    out: Path,
    writer: Any,
    n: int,
    imgsz: int,
    fmt: str,
    seed: int,
    val_fraction: float,
    max_objects: int,
    object_size: tuple[float, float],
) -> dict[str, Any]:
    from PIL import Image

    from visiontool.data.detection import DetectionDataset
    from visiontool.data.records import ImageRecord

    stage = _stage(out)
    n_val = _n_val(n, val_fraction)
    records: dict[str, list[ImageRecord]] = {"train": [], "val": []}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image, boxes, labels = render_scene(
            rng, imgsz, max_objects=max_objects, object_size=object_size
        )
        path = stage / f"synth_{i:06d}.jpg"
        _save(Image.fromarray(image), path, "JPEG")
        split = "val" if i >= n - n_val else "train"
        records[split].append(
            ImageRecord(
                image_id=i + 1,
                path=path,
                width=imgsz,
                height=imgsz,
                boxes=boxes,
                labels=labels,
                iscrowd=np.zeros(len(labels), bool),
                difficult=np.zeros(len(labels), bool),
            )
        )
    splits = {
        name: DetectionDataset(recs, SHAPES, root=stage, format="synth", split=name)
        for name, recs in records.items()
        if recs
    }
    writer.write(splits, out, transfer="move")
    shutil.rmtree(stage)
    objects = sum(len(r.labels) for recs in records.values() for r in recs)
    return {
        "out": str(out),
        "task": "detect",
        "format": fmt,
        "images": n,
        "objects": objects,
        "splits": {name: len(ds) for name, ds in splits.items()},
        "classes": list(SHAPES),
        "seed": seed,
    }


def synth_classification(
    out: str | Path | None,
    *,
    n: int,
    imgsz: int = 64,
    seed: int = 0,
    kind: str = "shapes",
    val_fraction: float = 0.2,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Write an ImageFolder set `out/{train,val}/<class>/*.png`, balanced over classes.
    `out` must be new or empty; with `exist_ok` an earlier synth set there is replaced."""
    _check(n, imgsz, val_fraction)
    if kind not in ("shapes", "digits"):
        raise ConfigError(f"--kind must be 'shapes' or 'digits', got {kind!r}")
    with prepare_out(_out_path(out), "data/synth", exist_ok=exist_ok, owned=SYNTH_OWNED) as claimed:
        return _synth_classification(claimed.path, n, imgsz, seed, kind, val_fraction)


def _synth_classification(
    out: Path, n: int, imgsz: int, seed: int, kind: str, val_fraction: float
) -> dict[str, Any]:
    from PIL import Image

    classes = SHAPES if kind == "shapes" else DIGITS
    counts = {"train": 0, "val": 0}
    k = len(classes)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        label = i % k
        per_class = n // k + (1 if label < n % k else 0)
        split = "val" if i // k >= per_class - _n_val(per_class, val_fraction) else "train"
        if kind == "shapes":
            pixels = render_shape_tile(rng, imgsz, label)
            image = Image.fromarray(pixels)
        else:
            image = Image.fromarray(render_digit(rng, imgsz, label))
        _save(image, out / split / classes[label] / f"{i:06d}.png", "PNG")
        counts[split] += 1
    return {
        "out": str(out),
        "task": "classify",
        "kind": kind,
        "format": "imagefolder",
        "images": n,
        "splits": {name: c for name, c in counts.items() if c},
        "classes": list(classes),
        "seed": seed,
    }


def check_object_size(object_size: tuple[float, float]) -> tuple[float, float]:
    """`(low, high)` fractions of the image side with 0 < low <= high <= 1, as floats."""
    try:
        low, high = (float(v) for v in object_size)
    except (TypeError, ValueError):
        shown = ",".join(str(v) for v in object_size)
        raise ConfigError(f"--object-size must be two numbers LOW,HIGH, got {shown!r}") from None
    if not (0 < low <= high <= 1):
        raise ConfigError(
            f"--object-size must be fractions of the image side with 0 < LOW <= HIGH <= 1, "
            f"got {low:g},{high:g}"
        )
    return low, high


def _check(n: int, imgsz: int, val_fraction: float) -> None:
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if imgsz < 16:
        raise ConfigError(f"--imgsz must be at least 16, got {imgsz}")
    # render_scene holds a few (imgsz, imgsz) planes at once: float masks, int64 grids
    check_budget(64 * imgsz * imgsz, f"--imgsz {imgsz}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val fraction must be in [0, 1), got {val_fraction}")


def _n_val(n: int, val_fraction: float) -> int:
    """Images for val: at least one when there are two or more and a fraction was asked for."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


SYNTH_OWNED = (
    ".staging/*",
    "images/*/synth_*.jpg",
    "images/synth_*.jpg",
    "annotations/instances_*.json",
    "JPEGImages/synth_*.jpg",
    "Annotations/synth_*.xml",
    "ImageSets/Main/*.txt",
    "labels/*/synth_*.txt",
    "labels/synth_*.txt",
    "data.yaml",
    "classes.txt",
    "train/*/[0-9][0-9][0-9][0-9][0-9][0-9].png",
    "val/*/[0-9][0-9][0-9][0-9][0-9][0-9].png",
)
"""What `data synth --exist-ok` removes from a reused --out: the images and annotation files
an earlier synth run wrote there, in any of its layouts (coco, voc, yolo, imagefolder);
other files are kept."""


def _out_path(out: str | Path | None) -> Path | None:
    """None: a fresh runs/data/synth/exp* (chosen and claimed by `prepare_out`)."""
    return None if out is None else Path(out)


def _stage(out: Path) -> Path:
    stage = out / ".staging"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    return stage


def _save(image: Any, path: Path, fmt: str) -> None:
    from visiontool.io.atomic import write_bytes

    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- backgrounds


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float32 (H, W, 3) background: noise, a gradient or a texture, in muted colours."""
    import cv2

    kind = int(rng.integers(3))
    base = rng.uniform(30, 225, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # smooth blotches plus grain
        coarse = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
        blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        image = base + blobs * rng.uniform(10, 35)
    elif kind == 1:  # linear gradient between two colours
        other = rng.uniform(30, 225, 3)
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        image = base * (1 - t[..., None]) + other * t[..., None]
    else:  # stripes or a checker of two close colours
        other = np.clip(base + rng.normal(0, 40, 3), 0, 255)
        period = rng.uniform(6, max(8.0, width / 4))
        angle = rng.uniform(0, math.pi)
        u = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        if rng.random() < 0.5:
            t = 0.5 + 0.5 * np.sin(2 * math.pi * u)
        else:
            v = (-xx * math.sin(angle) + yy * math.cos(angle)) / period
            t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        image = base * (1 - t[..., None]) + other * t[..., None]
    image = image + rng.normal(0, rng.uniform(2, 12), (height, width, 3))
    return image.astype(np.float32)


# ---------------------------------------------------------------- shapes


def shape_polygons(label: int, cx: float, cy: float, size: float, angle: float) -> list[np.ndarray]:
    """Polygons (float (N, 2) points) of a shape of extent `size`; a ring's second is its hole."""
    r = size / 2
    name = SHAPES[label]
    if name in ("circle", "ring"):
        local = _ngon(48, r)
    elif name == "square":
        local = _ngon(4, r, phase=math.pi / 4)
    elif name == "triangle":
        local = _ngon(3, r, phase=-math.pi / 2)
    elif name == "star":
        outer, inner = (
            _ngon(5, r, phase=-math.pi / 2),
            _ngon(5, r * 0.42, phase=-math.pi / 2 + math.pi / 5),
        )
        local = np.stack([outer, inner], axis=1).reshape(-1, 2)
    else:  # cross: a plus with arms a third as wide as it is long
        w = r / 3
        local = np.array(
            [[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w],
             [w, r], [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w]], np.float64,
        )  # fmt: skip
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    polygons = [local @ rot.T + (cx, cy)]
    if name == "ring":
        polygons.append(_ngon(48, r * 0.55) + (cx, cy))
    return polygons


def _ngon(k: int, r: float, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(k) * 2 * math.pi / k
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def shape_mask(
    label: int, cx: float, cy: float, size: float, angle: float, shape: tuple[int, int]
) -> np.ndarray:
    """Anti-aliased uint8 coverage mask (0..255) of one shape."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    polygons = shape_polygons(label, cx, cy, size, angle)
    for k, polygon in enumerate(polygons):
        points = np.round(polygon * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(mask, [points], 0 if k else 255, lineType=cv2.LINE_AA, shift=4)
    return mask


def _colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A saturated colour far (in RGB) from the background under the shape."""
    import colorsys

    best, best_distance = None, -1.0
    for _ in range(24):
        rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.45, 1), rng.uniform(0.3, 1)))
        colour = rgb * 255
        distance = float(np.linalg.norm(colour - under))
        if distance >= MIN_CONTRAST:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    return 255 - under if best_distance < MIN_CONTRAST / 2 else best  # type: ignore[return-value]


def _paint(
    image: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator
) -> None:
    alpha = mask.astype(np.float32)[..., None] / 255.0
    shade = colour + rng.normal(0, 4, 3)  # a slightly different tone per object
    image *= 1 - alpha
    image += alpha * shade


def render_scene(
    rng: np.random.Generator,
    imgsz: int,
    *,
    max_objects: int = 6,
    object_size: tuple[float, float] = DEFAULT_OBJECT_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One detection image (uint8 HxWx3), its boxes (float32 xyxy) and labels (int64)."""
    image = background(rng, imgsz, imgsz)
    min_size = max(8.0, imgsz * object_size[0])
    max_size = max(min_size + 1, imgsz * object_size[1])
    count = int(rng.integers(1, max_objects + 1))
    full: list[np.ndarray] = []  # each object's own pixels
    visible: list[np.ndarray] = []  # what is still visible of it
    boxes, labels = [], []
    for _ in range(count):
        placed = _place(rng, imgsz, min_size, max_size, full, visible)
        if placed is None:
            continue
        label, mask = placed
        solid = mask > 127
        ys, xs = np.nonzero(solid)
        under = image[solid].mean(axis=0)
        _paint(image, mask, _colour(rng, under), rng)
        for k in range(len(visible)):
            visible[k] &= ~solid
        full.append(solid)
        visible.append(solid.copy())
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    image = _finish(rng, image)
    return (
        image,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(labels, np.int64),
    )


def _place(
    rng: np.random.Generator,
    imgsz: int,
    min_size: float,
    max_size: float,
    full: list[np.ndarray],
    visible: list[np.ndarray],
) -> tuple[int, np.ndarray] | None:
    """A shape whose drawing leaves every earlier object at least MIN_VISIBLE visible."""
    for _ in range(12):
        label = int(rng.integers(len(SHAPES)))
        size = float(math.exp(rng.uniform(math.log(min_size), math.log(max_size))))
        half = size / 2
        cx, cy = rng.uniform(half, imgsz - half, 2)
        mask = shape_mask(label, cx, cy, size, rng.uniform(0, 2 * math.pi), (imgsz, imgsz))
        solid = mask > 127
        if solid.sum() < 16:
            continue
        if all(
            (vis & ~solid).sum() >= MIN_VISIBLE * own.sum()
            for own, vis in zip(full, visible, strict=True)
        ):
            return label, mask
    return None


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor-like grain and an occasional blur, then back to uint8."""
    import cv2

    image = image + rng.normal(0, rng.uniform(0, 6), image.shape)
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_shape_tile(rng: np.random.Generator, imgsz: int, label: int) -> np.ndarray:
    """One classification image: a single shape of class `label`, large and near the centre."""
    image = background(rng, imgsz, imgsz)
    size = imgsz * rng.uniform(0.4, 0.85)
    cx, cy = imgsz / 2 + rng.uniform(-0.12, 0.12, 2) * imgsz
    mask = shape_mask(label, cx, cy, size, rng.uniform(0, 2 * math.pi), (imgsz, imgsz))
    under = image[mask > 127].mean(axis=0)
    _paint(image, mask, _colour(rng, under), rng)
    return _finish(rng, image)


# ---------------------------------------------------------------- digits


_HERSHEY = ("FONT_HERSHEY_SIMPLEX", "FONT_HERSHEY_DUPLEX", "FONT_HERSHEY_COMPLEX",
            "FONT_HERSHEY_TRIPLEX", "FONT_HERSHEY_PLAIN")  # fmt: skip


def render_digit(rng: np.random.Generator, imgsz: int, digit: int) -> np.ndarray:
    """A grayscale (H, W) uint8 digit, light on dark like MNIST: Pillow's built-in font or one of
    OpenCV's Hershey fonts, random weight, rotation, shear, scale, shift, blur and noise."""
    import cv2

    canvas = 4 * imgsz
    glyph = _glyph(rng, canvas, str(digit))
    angle = rng.uniform(-18, 18)
    scale = rng.uniform(0.75, 1.05)
    shear = rng.uniform(-0.3, 0.3)
    matrix = cv2.getRotationMatrix2D((canvas / 2, canvas / 2), angle, scale)
    matrix[0, 1] += shear * scale
    matrix[0, 2] -= shear * scale * canvas / 2
    matrix[:, 2] += rng.uniform(-0.08, 0.08, 2) * canvas
    warped = cv2.warpAffine(glyph, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR)
    small = cv2.resize(warped, (imgsz, imgsz), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.3:
        small = cv2.GaussianBlur(small, (3, 3), 0)
    low, high = rng.uniform(0, 50), rng.uniform(190, 255)
    image = low + small / 255.0 * (high - low) + rng.normal(0, rng.uniform(0, 18), small.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _glyph(rng: np.random.Generator, canvas: int, text: str) -> np.ndarray:
    """The digit drawn white on black, centred, about 70% of the canvas tall."""
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    if rng.random() < 0.5:
        font = ImageFont.load_default(size=int(canvas * rng.uniform(0.6, 0.8)))
        image = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(image)
        stroke = int(rng.integers(0, max(2, canvas // 24)))
        draw.text(
            (canvas / 2, canvas / 2),
            text,
            fill=255,
            font=font,
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=255,
        )
        return np.asarray(image, dtype=np.uint8).copy()
    face = getattr(cv2, _HERSHEY[int(rng.integers(len(_HERSHEY)))])
    if rng.random() < 0.3:
        face |= cv2.FONT_ITALIC
    thickness = int(rng.integers(max(2, canvas // 40), max(3, canvas // 14)))
    (width, height), _ = cv2.getTextSize(text, face, 1.0, thickness)
    font_scale = canvas * rng.uniform(0.55, 0.75) / max(height, 1)
    thickness = max(1, int(thickness * font_scale / 2))
    (width, height), _ = cv2.getTextSize(text, face, font_scale, thickness)
    image = np.zeros((canvas, canvas), np.uint8)
    origin = (int((canvas - width) / 2), int((canvas + height) / 2))
    cv2.putText(image, text, origin, face, font_scale, 255, thickness, cv2.LINE_AA)
    return image
