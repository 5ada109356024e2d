"""An evaluation run: ground truth + predictions (from a file or a model) -> metrics.json, plots.

`run_eval` is what `visiontool eval` calls. Detection is scored three ways on the same rows:
COCO's 12 numbers and per-class AP (faster-coco-eval), VOC AP50 (07 11-point and all-point),
and a confusion matrix with a background class. Classification gives top-1/top-5 and per-class
precision/recall/F1. A model of a task scored per image (single, multilabel: `TaskSpec.score`)
is run over the data set as its task reads it and scored by the task. The task is the model's
(`--model/--weights`), or the data set's for a predictions file. `--fail-under` gates are
checked here and reported back; the CLI turns a missed gate into exit code 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from visiontool.engine.evaluate.inputs import GroundTruth, ModelRun, load_ground_truth
from visiontool.errors import ConfigError
from visiontool.io.plot_worker import PlotWorker
from visiontool.io.predictions import Detections, ImageIndex, no_gc
from visiontool.metrics.coco import COCO_KEYS

DETECTION_KEYS = (*COCO_KEYS, "voc07_map50", "voc_map50")


@dataclass
class EvalConfig:
    """Everything `visiontool eval` takes; see docs/api.md for the table."""

    data: Path
    """Data set folder, data spec, or a bare COCO annotations json (the ground truth)."""
    pred: Path | None = None
    """Predictions to score: a predictions.jsonl or a COCO results json (or give `model`)."""
    model: str | None = None
    """Registry model to run over the data set instead of reading `pred`."""
    weights: str | None = None
    """With `model`: checkpoint path, `DEFAULT` or `none`; None means `DEFAULT`."""
    split: str | None = "val"
    """Which split of the data set."""
    out: Path | None = None
    """Where metrics.json and plots go; None writes nothing (the CLI defaults to runs/eval/exp*)."""
    iou_thresholds: list[float] | None = None
    """COCO IoU thresholds; None: COCO's 0.50:0.05:0.95."""
    conf: float | None = None
    """Score threshold: detection's confusion matrix drops predictions below it (None:
    0.25); a multi-label model's label threshold (None: the model's own)."""
    iou: float = 0.45
    """Confusion matrix: the IoU that makes a match."""
    fail_under: dict[str, float] = field(default_factory=dict)
    """Gates, metric -> minimum (e.g. {"map50": 0.5}); missed ones are listed in the report."""
    lenient: bool = False
    """Skip bad prediction lines with a warning instead of raising (exit 2)."""
    plots: bool = True
    """Write PNG plots (PR curves, confusion matrix)."""
    report: bool = True
    """Write report.html: the scores, per-class table and plots in one offline page."""
    device: str = "auto"
    """With `model`: `auto`, `cpu`, `cuda` or `cuda:N`."""
    batch: int = 8
    """With `model`: images per batch."""
    workers: int | None = None
    """With `model`: decode workers; None: spare cores."""
    half: bool = False
    """With `model`: half precision on GPU."""
    imgsz: int | None = None
    """With `model`: override the model's input size."""


@dataclass
class EvalReport:
    """Metrics (the content of metrics.json) and what happened on the way."""

    task: str
    metrics: dict[str, Any]
    classes: list[str]
    images: int
    predictions: int
    source: str  # the predictions file or the model name
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # missed --fail-under gates
    matching: str | None = None  # detection: how predictions found their images
    thumbnails: Any = field(default=None, repr=False)  # report.html's images (io.report)
    failed_images: int = 0  # images the model failed on (scored as finding nothing): exit 1

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.metrics)
        if self.matching is not None:
            data["matching"] = self.matching
        if self.failed_images:
            data["failed_images"] = self.failed_images
        return data


Log = Callable[[str], None]


DETECTION_CONF = 0.25
"""The confusion matrix's score threshold when `EvalConfig.conf` is None."""


def run_eval(config: EvalConfig, *, on_log: Log | None = None) -> EvalReport:
    """Score predictions against `config.data`; write metrics.json and plots under `config.out`."""
    from visiontool.tasks.spec import get_task

    log = on_log or (lambda message: None)
    check_config(config)
    # scoring a file never imports torch: a forked worker can draw while the parent scores
    drawing = config.pred is not None and config.out is not None and config.plots
    with PlotWorker(enabled=drawing) as plots:
        gt, dataset = load_ground_truth(config.data, split=config.split)
        run = None if config.pred is not None else _model_run(config)
        if run is None:  # a predictions file: the data set says what it holds
            task = get_task("detect" if gt is not None else "classify")
        else:
            task = get_task(run.load().info.task)
            _check_data_fits(task, config.data, dataset, gt, run)
        check_gate_keys(config.fail_under, task.name)
        if task.score is not None:
            report = _run_task(config, task, dataset, run, log)  # type: ignore[arg-type]
        elif gt is None:
            report = _run_classification(config, dataset, log, run)
        else:
            report = _run_detection(config, gt, dataset, log, run, plots)
    if run is not None and run.failures:
        report.failed_images = len(run.failures)
        report.warnings.insert(0, failures_message(run.failures, report.images))
    report.failed = failed_gates(report.metrics, config.fail_under)
    if config.out is not None and config.report:
        report.files.append(str(_write_report(config, report)))
    return report


def _write_report(config: EvalConfig, report: EvalReport) -> Path:
    from visiontool.io.report import eval_html, write_report

    subtitle = (f"{report.images} images, {report.predictions} predictions from {report.source}; "
                f"ground truth {config.data}")  # fmt: skip
    text = eval_html(f"visiontool eval ({report.task})", report.metrics,
                     [Path(f) for f in report.files], subtitle=subtitle,
                     grid=report.thumbnails)  # fmt: skip
    return write_report(Path(config.out) / "report.html", text)  # type: ignore[arg-type]


def _check_data_fits(
    task: Any, data: Path, dataset: Any, gt: GroundTruth | None, run: ModelRun
) -> None:
    """The model's task reads this kind of data set (`TaskSpec.reads`), else a usage error."""
    kind = "detect" if gt is not None else "classify"
    if kind not in task.reads:
        info = run.load().info
        raise ConfigError(
            f"model {info.name!r} is a {info.task} model but the data set is for {kind}"
        )
    if dataset is None and task.score is not None:
        raise ConfigError(
            f"{data} is a bare annotations file: a model needs the images; pass the data set "
            "folder (or a data spec) as --data"
        )


def failures_message(failures: list[str], images: int) -> str:
    """How many images the model failed on, and the first reason."""
    return (
        f"{len(failures)} of {images} images failed in the model and were scored as finding "
        f"nothing (first: {failures[0]}); the scores do not measure the model"
    )


def check_config(config: EvalConfig) -> None:
    """Every option in its range (ConfigError, exit 2); the CLI calls it before the output
    folder is made, `run_eval` again for API callers."""
    _validate(config)
    check_gate_values(config.fail_under)


def _validate(config: EvalConfig) -> None:
    if (config.pred is None) == (config.model is None and config.weights is None):
        raise ConfigError("pass either --pred FILE or --model NAME/--weights PATH (not both)")
    if config.iou_thresholds is not None:
        bad = [t for t in config.iou_thresholds if not 0.0 < t <= 1.0]
        if bad or not config.iou_thresholds:
            raise ConfigError(f"--iou-thresholds must be numbers in (0, 1], got {bad or 'none'}")
    if not 0.0 < config.iou <= 1.0 or (config.conf is not None and not 0.0 <= config.conf <= 1.0):
        raise ConfigError("--iou must be in (0, 1] and --conf in [0, 1]")
    from visiontool.runtime import check_imgsz, check_loader

    check_loader(config.workers, config.batch)
    check_imgsz(config.imgsz, config.batch)
    device = (config.device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {config.device!r}")


def _run_detection(
    config: EvalConfig,
    gt: GroundTruth,
    dataset: Any,
    log: Log,
    run: ModelRun | None,
    plots: PlotWorker,
) -> EvalReport:
    if config.pred is not None:
        from visiontool.io.predictions import read_predictions, resolve_predictions

        with no_gc():
            raw = read_predictions(config.pred)
            dets = resolve_predictions(
                raw,
                images=ImageIndex(gt.images),
                image_ids=gt.image_ids,
                classes=gt.classes,
                category_ids=gt.category_ids,
                lenient=config.lenient,
            )
        if raw.failed_images:
            dets.warnings.append(f"{raw.failed_images} image(s) failed in the predictions file")
        if not len(raw.keys):  # a run killed before its first line, or the wrong file
            dets.warnings.append(
                f"{config.pred} holds no results at all: every score is 0; pass the "
                "predictions of a finished run"
            )
        elif raw.format == "jsonl":  # detect writes a line per image, even finding nothing
            missing = _images_without_line(raw, gt)
            if missing:
                dets.warnings.append(
                    f"{missing} of {len(gt.image_ids)} images have no line in {config.pred}: "
                    "scored as finding nothing (an interrupted detect? run detect --resume)"
                )
        source = str(config.pred)
    else:
        if dataset is None:
            raise ConfigError(
                f"{config.data} is a bare annotations file: a model needs the images; pass the "
                "data set folder (or a data spec) as --data"
            )
        from visiontool.engine.evaluate.inputs import predict_detections

        run = run or _model_run(config)
        dets, source = predict_detections(dataset, gt, run)
    log(
        f"scoring {len(dets)} predictions on {len(gt.image_ids)} images "
        f"(matched to images {dets.matching})"
    )
    early_pr = None
    if config.out is not None and config.plots:  # drawn while scoring when a worker runs
        _submit_confusion(config, gt, dets, plots, run)
        early_pr = partial(_submit_coco_pr, Path(config.out) / PR_CURVE, gt, plots)
    with no_gc():
        metrics, extras = score_detections(
            gt, dets, iou_thresholds=config.iou_thresholds, on_coco=early_pr
        )
    report = EvalReport(
        task="detect",
        metrics=metrics,
        classes=gt.classes,
        images=len(gt.image_ids),
        predictions=len(dets),
        source=source,
        warnings=list(dets.warnings),
        matching=dets.matching,
    )
    if config.out is not None:
        report.files = _write_detection(config, gt, report.to_dict(), extras, plots)
        if config.report and dataset is not None:
            report.thumbnails = eval_thumbnails(gt, dets, dataset, conf=shown_conf(config, run))
    return report


def _images_without_line(raw: Any, gt: GroundTruth) -> int:
    """How many of the data set's images no line of a predictions.jsonl names. `detect`
    writes one line per image it processed (with no detections too), so a missing line means
    an image never processed, not one with nothing in it. (A COCO results file lists only
    images with detections: there, an absent image is not a gap.)"""
    index = ImageIndex(gt.images)
    named = {index.lookup(str(key))[0] for key in raw.keys}
    return len(set(gt.image_ids) - named)


EVAL_THUMBNAILS = 60  # images drawn into eval's report.html (reading them costs time)


def eval_thumbnails(gt: GroundTruth, dets: Detections, dataset: Any, *, conf: float) -> Any:
    """The first EVAL_THUMBNAILS images of the data set with their predictions at `conf` or
    above (coloured, labelled) and their ground truth (thin white boxes)."""
    import itertools

    from visiontool.io.draw import draw_detections, draw_outlines, to_bgr_array
    from visiontool.io.images import read_image
    from visiontool.io.report import DetectReport
    from visiontool.results import Detection, ImageResult

    grid = DetectReport("eval")
    for record in itertools.islice(dataset.records(), EVAL_THUMBNAILS):
        image_id = int(record.image_id)
        try:
            image = read_image(record.path)
        except Exception:  # noqa: BLE001 - the report shows what it can read
            continue
        mine = (dets.image_ids == image_id) & (dets.scores >= conf)
        found = [Detection(tuple(map(float, box)), float(score), int(label), gt.classes[label])
                 for box, score, label in zip(dets.boxes[mine], dets.scores[mine],
                                              dets.labels[mine], strict=True)]  # fmt: skip
        bgr = draw_outlines(to_bgr_array(image), gt.boxes[gt.image == image_id])
        draw_detections(bgr, found)
        name = str(record.path.name)
        result = ImageResult(image=str(record.path), rel=name, detections=found)
        grid.add(result, bgr, None)
    return grid


def _model_run(config: EvalConfig) -> ModelRun:
    return ModelRun(
        model=config.model,
        weights=config.weights if config.weights is not None else "DEFAULT",
        device=config.device,
        batch=config.batch,
        workers=config.workers,
        half=config.half,
        imgsz=config.imgsz,
        conf=config.conf,
    )


def score_detections(
    gt: GroundTruth,
    dets: Detections,
    *,
    iou_thresholds: list[float] | None = None,
    on_coco: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json content, arrays for plots) for detections tied to `gt`; `on_coco(coco)`
    runs as soon as the COCO evaluation is done (to start its plot while VOC scores)."""
    from visiontool.metrics.coco import evaluate_coco, results_from_arrays
    from visiontool.metrics.voc import evaluate_voc

    cat_ids = np.asarray(gt.category_ids, dtype=np.int64)
    results = results_from_arrays(
        dets.image_ids, dets.coco_boxes, dets.scores, cat_ids[dets.labels]
    )
    coco = evaluate_coco(gt.coco, results, iou_thresholds=iou_thresholds)
    if on_coco is not None:
        on_coco(coco)
    voc = evaluate_voc(
        gt.image,
        gt.boxes,
        gt.labels,
        gt.difficult | gt.crowd,
        dets.image_ids,
        dets.boxes,
        dets.scores,
        dets.labels,
        num_classes=len(gt.classes),
    )
    n_gt = np.bincount(gt.labels[~gt.crowd], minlength=len(gt.classes))
    n_pred = np.bincount(dets.labels, minlength=len(gt.classes))
    per_class = {}
    for k, name in enumerate(gt.classes):
        per_class[name] = {
            "ap": coco.class_ap(k),
            "ap50": coco.class_ap(k, iou=0.5),
            "voc_ap50": float(voc.ap[k]),
            "n_gt": int(n_gt[k]),
            "n_pred": int(n_pred[k]),
        }
    metrics: dict[str, Any] = dict(coco.stats)
    metrics["voc07_map50"] = voc.map07
    metrics["voc_map50"] = voc.map
    metrics["f1"] = voc.f1  # best F1 at IoU 0.5, all classes together
    metrics["f1_conf"] = voc.f1_conf  # ... reached keeping scores >= this
    metrics["per_class"] = per_class
    return metrics, {"coco": coco, "voc": voc}


def shown_conf(config: EvalConfig, run: ModelRun | None) -> float:
    """The score threshold of the confusion matrix and the report's pictures: --conf, else the
    model's own (a shipped detector's tuned one, as `detect` uses), else DETECTION_CONF."""
    if config.conf is not None:
        return config.conf
    own = getattr(getattr(getattr(run, "loaded", None), "info", None), "conf", None)
    return float(own) if own is not None else DETECTION_CONF


def _submit_confusion(
    config: EvalConfig, gt: GroundTruth, dets: Detections, plots: Any, run: ModelRun | None
) -> None:
    from visiontool.engine.evaluate.plots import detection_confusion_plot, plot_confusion

    conf = shown_conf(config, run)
    matrix, names, title = detection_confusion_plot(gt, dets, conf=conf, iou=config.iou)
    path = Path(config.out) / "confusion_matrix.png"  # type: ignore[arg-type]
    plots.submit(plot_confusion, matrix, names, path, title=title)


PR_CURVE = "pr_curve.png"


def _submit_coco_pr(path: Path, gt: GroundTruth, plots: PlotWorker, coco: Any) -> None:
    """The PR-curve plot from the COCO evaluation, when it has IoU 0.5."""
    from visiontool.engine.evaluate.plots import coco_pr_curves, plot_pr_curves

    drawn = coco_pr_curves(gt, coco)
    if drawn is not None:
        plots.submit(plot_pr_curves, drawn[0], path, ap=drawn[1])


def _write_detection(
    config: EvalConfig,
    gt: GroundTruth,
    metrics: dict[str, Any],
    extras: dict[str, Any],
    plots: PlotWorker,
) -> list[str]:
    """metrics.json, then the PR curves and the confusion matrix (already submitted)."""
    from visiontool.io.atomic import write_json

    out = Path(config.out)  # type: ignore[arg-type]
    files = [str(write_json(out / "metrics.json", metrics))]
    if not config.plots:
        return files
    from visiontool.engine.evaluate.plots import plot_pr_curves, pr_curves

    if extras["coco"].threshold_row(0.5) is None:  # not drawn from COCO's: from VOC's
        curves, ap50 = pr_curves(gt, metrics, extras)
        plots.submit(plot_pr_curves, curves, out / PR_CURVE, ap=ap50)
    confusion, pr = plots.finish()
    return [*files, str(pr), str(confusion)]


def _run_classification(
    config: EvalConfig, dataset: Any, log: Log, run: ModelRun | None
) -> EvalReport:
    from visiontool.engine.evaluate.inputs import predict_classes
    from visiontool.metrics.classification import classification_metrics

    if config.pred is not None:
        raise ConfigError(
            f"{config.data} is a classification data set; score it with --model/--weights "
            "(--pred reads detection predictions)"
        )
    scores, labels, source = predict_classes(dataset, run or _model_run(config))
    log(f"scored {len(labels)} images")
    result = classification_metrics(scores, labels, num_classes=len(dataset.classes))
    per_class = {
        name: {
            "precision": float(result.precision[k]),
            "recall": float(result.recall[k]),
            "f1": float(result.f1[k]),
            "n": int(result.support[k]),
        }
        for k, name in enumerate(dataset.classes)
    }
    metrics = {"top1": result.top1, "top5": result.top5, "per_class": per_class}
    report = EvalReport(
        task="classify",
        metrics=metrics,
        classes=list(dataset.classes),
        images=int(labels.size),
        predictions=int(labels.size),
        source=source,
    )
    if config.out is not None:
        from visiontool.io.atomic import write_json

        out = Path(config.out)
        report.files = [str(write_json(out / "metrics.json", metrics))]
        if config.plots:
            from visiontool.engine.evaluate.plots import plot_confusion

            path = plot_confusion(
                result.confusion, list(dataset.classes), out / "confusion_matrix.png"
            )
            report.files.append(str(path))
    return report


def _run_task(config: EvalConfig, task: Any, dataset: Any, run: ModelRun, log: Log) -> EvalReport:
    """A model of a task scored per image: run it over the data set as the task reads it,
    score the rows with `task.score`; metrics.json holds the scalars and `per_class`."""
    from visiontool.engine.evaluate.inputs import predict_rows

    dataset = task.adapt(dataset)
    rows, conf, source = predict_rows(task, dataset, run)
    log(f"scored {len(rows)} images")
    scored = task.score(rows, classes=list(dataset.classes), conf=conf)
    per_class = {row["class"]: {k: v for k, v in row.items() if k != "class"}
                 for row in scored.per_class[1:]}  # fmt: skip
    metrics: dict[str, Any] = dict(scored.metrics)
    if conf is not None and task.output == "scores":
        metrics["threshold"] = conf
    metrics["per_class"] = per_class
    report = EvalReport(
        task=task.name,
        metrics=metrics,
        classes=list(dataset.classes),
        images=len(rows),
        predictions=len(rows),
        source=source,
    )
    if config.out is not None:
        from visiontool.io.atomic import write_json

        report.files = [str(write_json(Path(config.out) / "metrics.json", metrics))]
    return report


def check_gate_values(gates: dict[str, float]) -> None:
    """Every metric a gate can name lies in [0, 1]: a NaN, infinite or out-of-range threshold
    could never fail (or never pass), so it is a usage error."""
    for key, value in gates.items():
        value = float(value)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(
                f"--fail-under {key}={value:g}: the threshold must be a number in [0, 1] "
                "(metrics are fractions; e.g. map50=0.5)"
            )


def check_gate_keys(gates: dict[str, float], task: str) -> None:
    """Unknown --fail-under keys are a usage error, found before any image is scored: the
    task's higher-is-better numbers (`TaskSpec.metrics`)."""
    from visiontool.tasks.spec import get_task

    known = get_task(task).metrics
    for key in gates:
        if key not in known:
            from visiontool.errors import UnknownName

            raise UnknownName(f"{task} metric for --fail-under", key, known)


def failed_gates(metrics: dict[str, Any], gates: dict[str, float]) -> list[str]:
    """'key=value < threshold' for each gate missed (an undefined -1 metric misses any gate)."""
    return [
        f"{key}={metrics[key]:.4f} < {threshold:g}"
        for key, threshold in gates.items()
        if not float(metrics[key]) >= threshold  # a NaN metric misses too
    ]
