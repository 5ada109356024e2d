"""`visiontool detect`: run a detector or classifier over images and save what it finds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from visiontool.cli.common import (
    MODEL_HELP,
    WEIGHTS_HELP,
    Console,
    DeviceOpt,
    ExistOkOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    WorkersOpt,
    list_option,
    out_option,
)

if TYPE_CHECKING:
    from visiontool.engine.predict.detect import DetectSummary
    from visiontool.results import ImageResult

HELP = (
    "Detect objects (or classify) in images and videos: files, folders, globs, .txt lists, - "
    "(stdin), camera indexes (0) and stream URLs (rtsp://...). Writes annotated images (an mp4 "
    "per video), predictions.jsonl (video frames with frame and time_s) and summary.json. The "
    "model's task decides what each image gets: boxes (detect; single: one box, its largest "
    "object), the top-k classes (classify) or every class scoring at least --conf (multilabel)."
)


def detect(
    sources: list[str] = typer.Argument(
        None, help="Images, videos, folders, globs, .txt lists, - (stdin), 0 (camera), URLs."
    ),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    weights: str = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP, show_default="DEFAULT"),
    conf: float = typer.Option(
        None,
        "--conf",
        help="Score threshold: drop boxes (multilabel: classes) scoring below it.",
        show_default="the model's (shipped detectors: tuned), else 0.25; multilabel: --threshold",
    ),
    iou: float = typer.Option(None, "--iou", help="NMS IoU threshold.", show_default="the model's"),
    max_det: int = typer.Option(300, "--max-det", help="Most detections kept per image."),
    classes: list[str] = list_option(
        "--classes", kind="name", help="Keep only these class names or ids, e.g. circle,star."
    ),
    imgsz: int = typer.Option(
        None, "--imgsz", help="Model input size.", show_default="the model's"
    ),
    batch: int = typer.Option(1, "--batch", "-b", help="Images per forward pass."),
    workers: int = WorkersOpt,
    inflight: int = typer.Option(
        None, "--inflight", help="Batches in the model at once, one thread each.", show_default="2"
    ),
    decode: str = typer.Option(
        "auto",
        "--decode",
        help="Where JPEGs are decoded: auto (batched on the GPU when the model runs on one), "
        "cpu, or device.",
    ),
    draw_threads: int = typer.Option(
        None,
        "--draw-threads",
        help="Threads that draw and encode annotated images.",
        show_default="1 on <= 4 cores, else cores/4 (max 8)",
    ),
    half: bool = typer.Option(False, "--half", help="fp16 autocast on GPU (ignored on CPU)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    max_pixels: int = typer.Option(
        100_000_000,
        "--max-pixels",
        help="Refuse images with more pixels (0: no limit).",
        show_default="100000000 (100 MP)",
    ),
    topk: int = typer.Option(5, "--topk", help="Classes reported per image (classifiers)."),
    save_img: bool = typer.Option(True, "--save-img/--no-save-img", help="Save annotated images."),
    save_txt: bool = typer.Option(False, "--save-txt", help="Save YOLO labels/<name>.txt files."),
    save_conf: bool = typer.Option(False, "--save-conf", help="Add scores to --save-txt lines."),
    save_coco: bool = typer.Option(False, "--save-coco", help="Save coco_results.json."),
    data: Path = typer.Option(
        None,
        "--data",
        help="With --save-coco: the data set the images come from; coco_results.json uses its "
        "image ids (for `eval --pred`).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first unreadable image."),
    vid_stride: int = typer.Option(
        1, "--vid-stride", help="Videos and streams: process every N-th frame."
    ),
    tile: int = typer.Option(
        None, "--tile", help="Large images: predict SIZE px tiles, merge their boxes."
    ),
    tile_overlap: float = typer.Option(0.2, "--tile-overlap", help="Overlap of tiles (fraction)."),
    merge: str = typer.Option("nms", "--merge", help="Tiles' duplicates: nms or wbf."),
    report: bool = typer.Option(
        False, "--report", help="Write report.html: thumbnails filterable by class and score."
    ),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    out: Path = out_option("detect"),
    exist_ok: bool = ExistOkOpt,
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Carry on the stopped run in --out: skip the images its predictions.jsonl has.",
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    from visiontool.engine.predict.detect import DetectConfig, run_detect

    if model is None and weights is None:
        raise typer.BadParameter("pass --model NAME (see `visiontool models`) or --weights PATH")
    from visiontool.distributed import process_info

    job = process_info()
    several = job.enabled
    # under torchrun, rank 0 speaks for the job (its own images, then the merged summary)
    speaks = job.is_main
    console = Console(json_mode=json_out, quiet=quiet or not speaks)
    config = DetectConfig(
        sources=list(sources or []),
        out=out,
        exist_ok=exist_ok,
        model=model,
        weights=weights if weights is not None else "DEFAULT",
        device=device,
        conf=conf,
        iou=iou,
        max_det=max_det,
        classes=list(classes) if classes else None,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        inflight=inflight,
        draw_threads=draw_threads,
        decode=decode,
        half=half,
        recursive=recursive,
        max_pixels=max_pixels if max_pixels > 0 else None,
        topk=topk,
        save_img=save_img,
        save_txt=save_txt,
        save_conf=save_conf,
        save_coco=save_coco,
        data=data,
        strict=strict,
        seed=seed,
        vid_stride=vid_stride,
        tile=tile,
        tile_overlap=tile_overlap,
        merge=merge,
        report=report,
        resume=resume,
    )
    from visiontool.io.sources import count_items

    whole = config.sources and not resume and not several  # else the count would mislead
    total = count_items(config.sources, recursive=recursive) if whole else None
    view = _Progress(console, json_out=json_out, total=total)
    try:
        summary = run_detect(
            config, on_result=view.on_result, on_log=console.warn if speaks else None
        )
    finally:
        view.stop()
    if speaks:
        _print_summary(console, summary)
    if summary.failed:
        raise typer.Exit(1)


class _Progress:
    """Per-image lines (plain output) or a rich progress bar (terminal), and --json lines."""

    def __init__(self, console: Console, *, json_out: bool, total: int | None = None) -> None:
        self.console = console
        self.json_out = json_out
        self.total = total
        self.count = 0
        self.bar = None
        if not console.plain and not console.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("detect"),
                BarColumn(),
                TextColumn(
                    "{task.completed}/{task.total} images" if total else "{task.completed} images"
                ),
                TimeElapsedColumn(),
                console=console.err,
                transient=True,
            )
            self.task = self.bar.add_task("detect", total=total)
            self.bar.start()

    def on_result(self, result: ImageResult) -> None:
        self.count += 1
        if self.json_out:
            self.console.emit_json(result.to_dict())
        if self.bar is not None:
            self.bar.advance(self.task)
        elif not self.json_out:
            if result.frame is not None:
                frames = result.video.frames if result.video is not None else 0
                index = f"{result.frame + 1}/{frames}" if frames else str(result.frame + 1)
                self.console.log(f"frame {index} {describe(result)}")
            else:
                index = f"{self.count}/{self.total}" if self.total else str(self.count)
                self.console.log(f"image {index} {describe(result)}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "mouse": "mice",
    "foot": "feet",
    "tooth": "teeth",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
    "skis": "skis",
    "scissors": "scissors",
}


def plural(word: str, n: int) -> str:
    """`word` for n == 1, else its plural: a small table of irregulars, "es" after s, x, z, ch
    and sh, "s" otherwise (1 circle, 2 circles; 1 cross, 2 crosses; 2 people)."""
    if n == 1:
        return word
    head, _, last = word.rpartition(" ")  # "traffic light" -> "traffic lights"
    lower = last.lower()
    if lower in IRREGULAR_PLURALS:
        plural_last = IRREGULAR_PLURALS[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        plural_last = last + "es"
    else:
        plural_last = last + "s"
    return f"{head} {plural_last}" if head else plural_last


def count_labels(labels: list[str]) -> str:
    """'4 triangles, 1 circle': most frequent first, then by name; '' for none."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n} {plural(label, n)}" for label, n in ordered)


def describe(r: ImageResult) -> str:
    """`path: 320x240 4 triangles, 1 circle, 45.1ms`, the per-image line after `image i/n`."""
    if r.error is not None:
        return f"{r.image}: FAILED {r.error}"
    if r.classes is not None:  # a multi-label model may find none over its threshold
        found = ", ".join(f"{c.label} {c.score:.2f}" for c in r.classes[:3]) or "(no classes)"
    else:
        found = count_labels([d.label for d in r.detections or []]) or "(no detections)"
    return f"{r.image}: {r.width}x{r.height} {found}, {r.time_ms:.1f}ms"


def _print_summary(console: Console, summary: DetectSummary) -> None:
    data = summary.to_dict()
    counts, times = data["counts"], data["times"]
    speed = ", ".join(f"{ms:.1f}ms {stage}" for stage, ms in times["per_image_ms"].items())
    overlap = f", {data['inflight']} batches at once" if data["inflight"] > 1 else ""
    now = counts["images"] - data["resumed"]  # this run's share (--resume)
    if now > 0 and counts["images"] > counts["failed"]:  # no speed line for nothing done
        console.log(
            f"Speed per image: {speed} (stages overlap{overlap}); "
            f"{times['images_per_s']:.2f} images/s"
        )
    if data["failures"]:
        console.table(
            "failed images",
            ["image", "reason"],
            [[f["image"], f["error"]] for f in data["failures"]],
        )
    n = counts["detections"]
    found = f"{n} detection{'' if n == 1 else 's'}, " if _gives_boxes(data["task"]) else ""
    frames = counts.get("frames", 0)
    stills = counts["images"] - frames
    inputs = ", ".join(
        f"{count} {word}{'' if count == 1 else 's'}"
        for count, word in ((stills, "image"), (frames, "video frame"))
        if count or (word == "image" and not frames)
    )
    earlier = f" ({data['resumed']} done before --resume)" if data["resumed"] else ""
    console.final(
        f"{inputs}{earlier}, {found}"
        f"{counts['failed']} failed in {times['total_s']:.1f}s on {data['device']}; "
        f"results saved to {data['out']}"
    )


def _gives_boxes(task: str) -> bool:
    from visiontool.tasks.spec import get_task

    return get_task(task).output == "boxes"
