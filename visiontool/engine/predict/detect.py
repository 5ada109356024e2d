"""A detection (or classification) run that writes files: `visiontool detect` and
`visiontool.detect`.

`run_detect` drains the prediction stream (`pipeline.stream_results`: decode -> batch ->
model, results in input order) into the writers (`sinks.ResultSink`, a background thread that
draws, encodes and writes, so the model never waits on disk), and records what happened in
`summary.json`. Failed images are reported and skipped (`--strict`: the run stops at the
first); Ctrl-C keeps what was written and marks the summary `stopped_early`.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontool import __version__
from visiontool.engine.predict.inflight import DEFAULT_INFLIGHT, BusyClock
from visiontool.engine.predict.pipeline import check_options, make_predictor, stream_results
from visiontool.engine.predict.sinks import ResultCallback, ResultSink
from visiontool.io.images import DEFAULT_MAX_PIXELS
from visiontool.io.paths import prepare_out
from visiontool.io.report import DetectReport
from visiontool.results import ImageResult
from visiontool.runtime import process_age_s

__all__ = ["DetectConfig", "DetectSummary", "ResultCallback", "run_detect"]


@dataclass
class DetectConfig:
    """Everything `visiontool detect` takes; see docs/api.md for the table."""

    sources: list[str]
    """Image and video files, folders, globs, `.txt` lists of paths, `-` (paths on stdin), camera
    indexes (`0`) and stream URLs (`rtsp://...`)."""
    out: Path | None = None
    """Output folder; None: the next free `runs/detect/exp`, `exp2`, ..."""
    exist_ok: bool = False
    """Write into `out` even if it already exists."""
    model: str | None = None
    """Registry model name (see `visiontool models`); may be None with a checkpoint."""
    weights: str | None = "DEFAULT"
    """`DEFAULT` (pretrained), `none` (random init) or a checkpoint path."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N` (auto: cuda if available)."""
    conf: float | None = None
    """Score threshold: detections (multi-label: classes) scoring below it are dropped; None:
    the model's (0.25 for detectors, a multi-label model's trained threshold, 0 for the
    single-object model: one detection per image)."""
    iou: float | None = None
    """NMS IoU threshold; None keeps the model's default."""
    max_det: int = 300
    """Most detections kept per image."""
    classes: list[str] | None = None
    """Keep only these class names or ids (each item may be comma-separated)."""
    imgsz: int | None = None
    """Override the model's input size (short side, or the fixed square)."""
    batch: int = 1
    """Images per forward pass (only images of one shape are batched together)."""
    workers: int | None = None
    """Decode processes; None: cores - 1 (at most 4), 0 on 2 cores or fewer (one thread)."""
    inflight: int | None = None
    """Batches in the model at once, one thread each; None: 2."""
    decode: str = "auto"
    """Where JPEGs are decoded: `auto` (on the GPU, batched, when the model runs on one;
    else by CPU workers), `cpu`, or `device` (the model's device, whatever it is)."""
    draw_threads: int | None = None
    """Threads that draw and encode annotated images; None: 1 on 4 cores or fewer, else a
    quarter of the cores (at most 8)."""
    half: bool = False
    """fp16/bf16 autocast on GPU (ignored on CPU)."""
    recursive: bool = False
    """Descend into sub-folders of folder sources."""
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    """Reject (as a failed image) images with more pixels; None: no limit."""
    topk: int = 5
    """Classes reported per image (classifiers)."""
    save_img: bool = True
    """Write annotated images."""
    save_txt: bool = False
    """Write YOLO `labels/<name>.txt` files."""
    save_conf: bool = False
    """Add scores to the `save_txt` lines."""
    save_coco: bool = False
    """Write `coco_results.json`."""
    data: Path | None = None
    """With `save_coco`: the data set the images come from (folder, spec or COCO json);
    coco_results.json then uses its image ids (images matched by path / relative name)."""
    strict: bool = False
    """Stop at the first unreadable image (it is still reported)."""
    seed: int = 0
    """Seeds torch before the model is built: makes `weights="none"` reproducible."""
    vid_stride: int = 1
    """Videos and streams: process every N-th frame."""
    tile: int | None = None
    """Large images: predict SIZE x SIZE tiles and merge their boxes (None: the whole image)."""
    tile_overlap: float = 0.2
    """With `tile`: the fraction of a tile its neighbours overlap."""
    merge: str = "nms"
    """With `tile`: how duplicates across tiles merge, `nms` or `wbf` (weighted box fusion)."""
    report: bool = False
    """Write report.html: thumbnails filterable by class and score, counts per class."""
    resume: bool = False
    """Carry on the run in `out` (which must be given): skip the inputs its predictions.jsonl
    already has, append the rest (`engine.predict.resume`)."""


@dataclass
class DetectSummary:
    """What a run did; written to summary.json."""

    model: str
    weights: str
    device: str
    task: str
    out: str
    inflight: int = 1  # batches in the model at once
    conf: float | None = None  # the score threshold applied (--conf, else the model's own)
    images: int = 0  # results: images, and video frames (counted in `frames` too)
    frames: int = 0
    failed: int = 0
    detections: int = 0  # boxes found (models that give boxes)
    failures: list[dict[str, str]] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)  # totals per stage
    total_s: float = 0.0
    stopped_early: bool = False
    model_busy_s: float = 0.0  # wall time with a batch in the model (`inflight.BusyClock`)
    startup_s: dict[str, float] = field(default_factory=dict)  # where a short run's time goes
    resumed: int = 0  # results from earlier runs in the folder (--resume), counted in `images`
    processes: int = 1  # torchrun processes whose results were merged

    def count(self, result: ImageResult) -> None:
        """Add one written result (its stage times but inference, counted per batch)."""
        self.images += 1
        self.frames += result.frame is not None
        for stage, ms in result.speed.items():
            if stage != "inference":
                self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms
        if result.error is not None:
            self.failed += 1
            self.failures.append({"image": result.image, "error": result.error})
        else:
            self.detections += len(result.detections or [])

    def to_dict(self) -> dict[str, Any]:
        import torch
        import torchvision

        now = self.images - self.resumed  # what this run did (its speed)
        return {
            "model": self.model,
            "weights": self.weights,
            "device": self.device,
            "task": self.task,
            "out": self.out,
            "inflight": self.inflight,
            "conf": self.conf,
            "versions": {
                "visiontool": __version__,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "python": platform.python_version(),
            },
            "counts": {
                "images": self.images,
                **({"frames": self.frames} if self.frames else {}),
                "ok": self.images - self.failed,
                "failed": self.failed,
                "detections": self.detections,
            },
            "failures": self.failures,
            "times": {
                "total_s": round(self.total_s, 3),
                "images_per_s": round(now / self.total_s, 3) if self.total_s else 0.0,
                # the model's own rate while it had work, and its busy share of the run:
                # under 1 the model waited for decoding or writing
                "model_images_per_s": (
                    round(now / self.model_busy_s, 3) if self.model_busy_s else 0.0
                ),
                "model_busy_share": (
                    round(min(1.0, self.model_busy_s / self.total_s), 3) if self.total_s else 0.0
                ),
                "per_image_ms": {k: round(v / max(1, now), 3) for k, v in self.stage_ms.items()},
                # process start -> run, model set-up, first result, final writes
                "startup_s": {k: round(v, 3) for k, v in self.startup_s.items()},
            },
            "stopped_early": self.stopped_early,
            "resumed": self.resumed,
            "processes": self.processes,
        }


def run_detect(
    config: DetectConfig,
    *,
    on_result: ResultCallback | None = None,
    on_log: Callable[[str], None] | None = None,
) -> DetectSummary:
    """Run the whole pipeline and write its files; return the summary. Raises
    VisiontoolError on setup errors. `on_result` runs (on the writer thread) after each
    result is written. Under torchrun each process takes a share of the inputs and rank 0
    merges what they wrote (`engine.predict.merge`); `config.resume` carries on a stopped run."""
    from visiontool.distributed import cleanup, init_distributed, launched_by_torchrun
    from visiontool.io.sources import first_item, plan_sources
    from visiontool.runtime import resolve_device

    check_options(
        conf=config.conf, batch=config.batch, inflight=config.inflight,
        max_det=config.max_det, imgsz=config.imgsz, workers=config.workers, topk=config.topk,
        vid_stride=config.vid_stride, tile=config.tile, tile_overlap=config.tile_overlap,
        merge=config.merge, decode=config.decode,
    )  # fmt: skip
    if config.data is not None and not config.save_coco:
        from visiontool.errors import ConfigError

        raise ConfigError("--data only sets the image ids of coco_results.json: add --save-coco")
    if config.draw_threads is not None and not 1 <= config.draw_threads <= 64:
        from visiontool.errors import ConfigError

        raise ConfigError(f"--draw-threads must be 1..64, got {config.draw_threads}")
    plan = plan_sources(config.sources, recursive=config.recursive)
    if config.resume or launched_by_torchrun():
        _check_mergeable(config, plan)
    first_item(plan)
    inputs, recursive_inputs = input_paths(plan)
    if config.data is not None:  # the data set named by --data is read too
        (recursive_inputs if Path(config.data).is_dir() else inputs).append(str(config.data))
    device = resolve_device(config.device)
    procs = init_distributed(device)
    try:
        # the output folder is checked (and locked) before any image is read or model loaded
        with _claim_out(config, procs, plan, inputs, recursive_inputs, on_log) as (out, clear):
            return _run(config, plan, out, procs, device, on_result=on_result, on_log=on_log,
                        clear_previous=clear)  # fmt: skip
    finally:
        cleanup(procs)


def _check_mergeable(config: DetectConfig, plan: Any) -> None:
    """--resume and torchrun split and re-join a run by its images: videos and streams (many
    results an input) and report.html (thumbnails of one process) are refused."""
    from visiontool.errors import ConfigError

    what = "--resume" if config.resume else "several processes (torchrun)"
    if config.report:
        raise ConfigError(f"--report does not work with {what}: run it without --report")
    if any(item.is_video for item in plan):
        raise ConfigError(
            f"{what} takes images only: run videos, cameras and streams in a detect of their own"
        )


@contextlib.contextmanager
def _claim_out(
    config: DetectConfig,
    procs: Any,
    plan: Any,
    inputs: list[str],
    recursive_inputs: list[str],
    on_log: Callable[[str], None] | None,
) -> Iterator[tuple[Path, Callable[[], object]]]:
    """Rank 0 checks, creates and locks the output folder and tells the others its path (or
    the error, which every process then raises). Yields the path and what removes an earlier
    run's files under --exist-ok (`OutDir.clear_previous`; a no-op on the other ranks), to be
    called once the model has loaded."""
    from visiontool.distributed import main_decides

    handle = None

    def claim() -> Path:
        nonlocal handle
        handle = _prepare(config, plan, inputs, recursive_inputs, on_log)
        return handle.path

    try:
        path = main_decides(claim, procs)
    except BaseException:  # the claim stood but telling the others failed: undo it
        if handle is not None:
            handle.release(failed=True)
        raise
    if handle is None:  # another rank: rank 0 holds the folder
        yield path, lambda: None
        return
    with handle:
        yield path, handle.clear_previous


def _prepare(
    config: DetectConfig,
    plan: Any,
    inputs: list[str],
    recursive_inputs: list[str],
    on_log: Callable[[str], None] | None,
) -> Any:
    """`prepare_out` for a new run, or for `--resume` (the folder kept as it is)."""
    from visiontool.engine.predict.resume import has_run
    from visiontool.errors import ConfigError

    if not config.resume:
        handle = prepare_out(
            config.out, "detect", exist_ok=config.exist_ok, inputs=inputs,
            recursive_inputs=recursive_inputs, owned=DETECT_OWNED, on_log=on_log,
            clear_later=True, holds_run=has_run,
        )  # fmt: skip
        clashes = [] if handle.created else _user_files_in_the_way(config, plan, handle.path)
        if clashes:
            handle.release()
            shown = ", ".join(clashes[:3]) + (", ..." if len(clashes) > 3 else "")
            raise ConfigError(
                f"--exist-ok would overwrite {len(clashes)} file(s) in {handle.path} that no "
                f"earlier detect run wrote ({shown}); move them, or choose another --out"
            )
        return handle
    if config.out is None:
        raise ConfigError("--resume needs --out DIR: the folder of the run to carry on")
    if config.exist_ok:
        raise ConfigError("--resume keeps the folder's results, --exist-ok replaces them: pick one")
    handle = prepare_out(
        config.out, "detect", exist_ok=True, inputs=inputs, recursive_inputs=recursive_inputs
    )
    path = handle.path
    if not handle.created and not has_run(path):
        leftovers = [p for p in path.iterdir() if not p.name.startswith(".")]
        if leftovers:
            handle.release()
            raise ConfigError(
                f"--resume: {path} holds no detect run (no predictions.jsonl, nor a detect "
                "args.json); pass the --out of the run to carry on"
            )
    return handle


def _run(
    config: DetectConfig,
    plan: Any,
    out: Path,
    procs: Any,
    device: Any,
    *,
    on_result: ResultCallback | None,
    on_log: Callable[[str], None] | None,
    clear_previous: Callable[[], object] = lambda: None,
) -> DetectSummary:
    from visiontool.distributed import local_device, main_decides
    from visiontool.engine.predict.merge import part_path
    from visiontool.engine.predict.resume import ARGS, has_run, load_previous, run_args
    from visiontool.io.atomic import write_json
    from visiontool.io.writers import PlanNames
    from visiontool.runtime import default_draw_threads

    merged = config.resume or procs.enabled  # predictions.jsonl is finished from its lines
    previous = None

    def what_is_done() -> dict[str, int]:
        nonlocal previous
        if config.resume and has_run(out):
            previous = load_previous(out, config)
            if on_log is not None:
                on_log(previous.describe(out))
        elif config.resume and on_log is not None:
            on_log(f"--resume: nothing to resume in {out}: starting a new run")
        return previous.counts.done if previous is not None else {}

    done = main_decides(what_is_done, procs)
    mine = plan.select(skip=done, shard=(procs.rank, procs.world_size))
    coco_ids = (
        _CocoImageIds(Path(config.data)) if config.save_coco and config.data is not None else None
    )
    setup_started = time.perf_counter()
    startup = {"process_s": process_age_s()}  # interpreter, imports and options, to here
    predictor = make_predictor(
        model=config.model, weights=config.weights, device=str(local_device(device, procs)),
        conf=config.conf, iou=config.iou, max_det=config.max_det, classes=config.classes,
        imgsz=config.imgsz, half=config.half, seed=config.seed, on_log=on_log, tile=config.tile,
        tile_overlap=config.tile_overlap, merge=config.merge, batch=config.batch,
    )  # fmt: skip
    startup["model_s"] = time.perf_counter() - setup_started  # build, weights, device, fusion
    if procs.is_main:  # the model loaded: from here the folder holds a run to resume
        clear_previous()  # --exist-ok: the earlier run's files go only now
        write_json(out / ARGS, run_args(config))
    info = predictor.loaded.info
    summary = DetectSummary(
        model=info.name,
        weights=info.weights,
        device=str(predictor.device),
        task=info.task,
        out=str(out),
        inflight=config.inflight or DEFAULT_INFLIGHT,
        conf=predictor.conf,
        startup_s=startup,
    )

    def written(result: ImageResult) -> None:
        if "first_result_s" not in startup:  # decode and the first batch (warm-up included)
            startup["first_result_s"] = time.perf_counter() - started
        summary.count(result)
        if on_result is not None:
            on_result(result)

    sink = ResultSink(
        out, category_ids=info.category_ids, save_img=config.save_img,
        save_txt=config.save_txt, save_conf=config.save_conf,
        save_coco=config.save_coco and not merged, coco_image_ids=coco_ids,
        depth=max(8, 2 * config.batch), on_written=written,
        report=DetectReport(f"visiontool detect: {info.name}") if config.report else None,
        names=PlanNames(mine), jsonl=part_path(out, procs.rank) if procs.enabled else None,
        append=config.resume, ordered=procs.enabled,
        drawers=config.draw_threads or default_draw_threads(),
    )  # fmt: skip
    clock = BusyClock()
    results = stream_results(
        mine, predictor, batch=config.batch, workers=config.workers, inflight=summary.inflight,
        topk=config.topk, max_pixels=config.max_pixels,
        keep_images=config.save_img or config.report, vid_stride=config.vid_stride,
        clock=clock, decode=config.decode,
    )  # fmt: skip
    started = time.perf_counter()
    finished = False
    try:
        with contextlib.closing(results):
            for result, image in results:
                if "inference" in result.speed:
                    inference = summary.stage_ms.get("inference", 0.0)
                    summary.stage_ms["inference"] = inference + result.speed["inference"]
                sink.put(result, image)
                if result.error is not None and config.strict:
                    summary.stopped_early = True
                    break
        finished = True
    except KeyboardInterrupt:  # what was done is still written, and marked incomplete
        summary.stopped_early = True
        raise
    finally:
        closing = time.perf_counter()
        sink.close()
        startup["finish_s"] = time.perf_counter() - closing  # the writes still queued
        summary.total_s = time.perf_counter() - started
        summary.model_busy_s = clock.busy_s
        if not merged:
            write_json(out / "summary.json", summary.to_dict())
        elif not procs.enabled or finished:  # a process that failed leaves its part
            summary = _finish_merged(config, plan, out, procs, summary, info, coco_ids)
        if sink.report is not None:
            _write_detect_report(sink.report, summary, out)
    if coco_ids is not None and coco_ids.missing and on_log is not None:
        on_log(coco_ids.report())
    return summary


def _finish_merged(
    config: DetectConfig,
    plan: Any,
    out: Path,
    procs: Any,
    summary: DetectSummary,
    info: Any,
    coco_ids: Any,
) -> DetectSummary:
    """Every process's part into predictions.jsonl (rank 0), and summary.json and
    coco_results.json made from it; each process returns the merged summary."""
    from visiontool.distributed import barrier, broadcast_object, gather_objects
    from visiontool.engine.predict.merge import (
        PREDICTIONS,
        count_lines,
        merge_parts,
        reorder_lines,
        write_coco_from_lines,
    )
    from visiontool.io.atomic import write_json

    barrier(procs)
    runs = gather_objects(summary, procs)
    if procs.is_main:
        merge_parts(out)
        places, rels = _plan_index(plan) if config.resume or config.save_coco else ({}, {})
        if config.resume:  # earlier lines first, then this run's: back into input order
            reorder_lines(out / PREDICTIONS, places)
        counts = count_lines(out / PREDICTIONS)
        stage_ms: dict[str, float] = {}
        for run in runs:
            for stage, ms in run.stage_ms.items():
                stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
        now = sum(run.images for run in runs)
        total = runs[0]
        total.stage_ms = stage_ms
        total.total_s = max(run.total_s for run in runs)
        total.model_busy_s = max(run.model_busy_s for run in runs)  # the processes ran at once
        total.stopped_early = any(run.stopped_early for run in runs)
        total.images, total.failed, total.detections = (
            counts.images, counts.failed, counts.detections
        )  # fmt: skip
        total.failures = counts.failures
        total.frames = 0
        total.resumed = max(0, counts.images - now)
        total.processes = procs.world_size
        if config.save_coco:
            write_coco_from_lines(
                out / PREDICTIONS, out / "coco_results.json", info.category_ids,
                lambda image: rels.get(image, Path(image).name), coco_ids,
            )  # fmt: skip
        write_json(out / "summary.json", total.to_dict())
        summary = total
    return broadcast_object(summary, procs)


def _plan_index(plan: Any) -> tuple[dict[str, list[int]], dict[str, str]]:
    """One walk of the whole plan: each image path's places in it (a path listed twice has
    two), and its relative name (the first listing's), for lines that carry only the path."""
    places: dict[str, list[int]] = {}
    rels: dict[str, str] = {}
    for index, item, _ in plan.walk():
        places.setdefault(item.path, []).append(index)
        rels.setdefault(item.path, item.rel)
    return places, rels


def _write_detect_report(report: Any, summary: DetectSummary, out: Path) -> None:
    from visiontool.io.report import write_report

    what = "boxes" if summary.detections else "results"
    subtitle = (
        f"{summary.images} inputs, {summary.detections} {what}, {summary.failed} failed in "
        f"{summary.total_s:.1f}s on {summary.device}; weights {summary.weights}"
        + ("; stopped early" if summary.stopped_early else "")
    )
    write_report(out / "report.html", report.html(subtitle))


class _CocoImageIds:
    """`detect --data`: each result's image id in the data set, for coco_results.json.

    Images are matched by absolute path, else by the longest trailing part of the path that
    names exactly one data-set image (as `eval` matches predictions.jsonl). An image the data
    set lacks gets an id past the data set's largest, so it never takes another image's id.
    """

    def __init__(self, data: Path) -> None:
        from visiontool.io.predictions import ImageIndex

        self.data = data
        images = _dataset_images(data)
        self.index = ImageIndex(images)
        self.next_free = max((i for i, _ in images), default=0) + 1
        self.missing: list[str] = []

    def __call__(self, result: ImageResult) -> int | None:
        import os

        found, _ = self.index.lookup(os.path.abspath(result.image))
        if found is None:
            found, _ = self.index.lookup(result.rel)
        if found is None:
            self.missing.append(result.image)
            found, self.next_free = self.next_free, self.next_free + 1
        return found

    def report(self) -> str:
        shown = ", ".join(self.missing[:3]) + (", ..." if len(self.missing) > 3 else "")
        return (
            f"{len(self.missing)} image(s) are not in the data set {self.data} ({shown}): "
            "coco_results.json gives them ids the data set does not use"
        )


def _dataset_images(data: Path) -> list[tuple[int, str]]:
    """(image id, name) for every image of every split of `data` (absolute path and the name
    relative to the data set), or of a bare COCO annotations json (its `file_name`s)."""
    import json
    import os

    from visiontool.errors import DataError

    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".json":
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(coco, dict) and "images" in coco and "categories" in coco:
                return [(int(img["id"]), str(img["file_name"])) for img in coco["images"]]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}: cannot read image ids and file names ({exc}); pass a COCO "
                "annotations json, a data set folder or a data spec as --data"
            ) from None
    from visiontool.data.datasets import open_splits

    images: list[tuple[int, str]] = []
    for dataset in open_splits(path).values():
        root = Path(getattr(dataset, "root", path))
        for record in dataset.records():
            images.append((int(record.image_id), os.path.abspath(record.path)))
            with contextlib.suppress(ValueError):
                images.append((int(record.image_id), record.path.relative_to(root).as_posix()))
    return images


def _user_files_in_the_way(config: DetectConfig, plan: Any, out: Path) -> list[str]:
    """The per-image files this run will write (annotated images and videos, labels/*.txt)
    that already exist in `out` and that no earlier detect run wrote there: --exist-ok
    replaces that run's files, and must not overwrite a user's own `x.jpg`."""
    from pathlib import PurePosixPath

    from visiontool.io.draw import output_suffix
    from visiontool.io.writers import OutputNames

    if not (config.save_img or config.save_txt):
        return []
    earlier = set(_previous_outputs(out))
    names = OutputNames()
    clashes = []
    for _, item, _ in plan.walk():
        base = names.base(item.rel)
        wanted = []
        if config.save_img:
            suffix = ".mp4" if item.is_video else output_suffix(PurePosixPath(item.rel).suffix)
            wanted.append(base.with_name(base.name + suffix))
        if config.save_txt and not item.is_video:
            wanted.append(PurePosixPath("labels") / base.with_name(base.name + ".txt"))
        clashes += [
            rel.as_posix()
            for rel in wanted
            if rel.as_posix() not in earlier and (out / rel).exists()
        ]
    return clashes


def _previous_outputs(out: Path) -> list[str]:
    """The per-image files an earlier detect run wrote here, from its predictions.jsonl (and
    the parts of a torchrun job that did not finish)."""
    from visiontool.engine.predict.merge import PART_GLOB, PREDICTIONS, read_lines

    names: list[str] = []
    for path in [out / PREDICTIONS, *sorted(out.glob(PART_GLOB))]:
        for data in read_lines(path):
            saved = data.get("saved")
            if isinstance(saved, list):
                names += [n for n in saved if isinstance(n, str)]
    return names


DETECT_OWNED = (
    _previous_outputs,  # first: it reads predictions.jsonl before that is removed
    "predictions.jsonl",
    "predictions.rank*.jsonl",
    "args.json",
    "summary.json",
    "coco_results.json",
    "report.html",
    ".coco_results.json.tmp",
    ".*.tmp",
)
"""What `detect --exist-ok` removes from a reused folder: the files of the earlier detect run
(annotated images and labels/*.txt listed in its predictions.jsonl, and the fixed names)."""


def input_paths(plan: Any) -> tuple[list[str], list[str]]:
    """The files and folders a detect run reads, for the output-folder check: (inputs read
    as they are or one level deep, folders read with everything below them)."""
    from visiontool.io.sources import GLOB_CHARS
    from visiontool.io.video import is_stream_spec

    inputs: list[str] = []
    recursive: list[str] = []
    for spec in plan.specs:
        if is_stream_spec(spec):  # a camera or URL: nothing on this disk
            continue
        if spec == "-":
            inputs += list(plan.stdin_lines)
            continue
        path = Path(spec)
        if any(ch in spec for ch in GLOB_CHARS) and not path.exists():
            parts = path.parts
            cut = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
            root = str(Path(*parts[:cut])) if cut else "."
            deep = "**" in spec or cut < len(parts) - 1
            (recursive if deep else inputs).append(root)
        elif path.is_dir():
            (recursive if plan.recursive else inputs).append(spec)
        else:
            inputs.append(spec)
            if path.suffix.lower() == ".txt":
                inputs += _list_entries(path)
    return inputs, recursive


def _list_entries(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        entry = Path(text)
        if not entry.is_absolute() and not entry.exists() and (path.parent / entry).exists():
            entry = path.parent / entry
        entries.append(str(entry))
    return entries
