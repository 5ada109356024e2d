"""`visiontool train`: train or fine-tune a model for any task (also under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from visiontool.cli.common import (
    Console,
    DeviceOpt,
    ExistOkOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    list_option,
)

if TYPE_CHECKING:
    from visiontool.engine.train.trainer import RunInfo, StepInfo

HELP = (
    "Train a detector composed from parts (--head NAME --backbone NAME, e.g. --head retinanet "
    "--backbone resnet18), a registry detector (--model NAME, e.g. frcnn-mobile-320 --weights "
    "DEFAULT, or the classic tinyssd, ssd-focal, yolo, frcnn-vgg16), a "
    "classifier (--task classify --model NAME), a largest-object detector (--task single "
    "--backbone NAME) or a multi-label classifier (--task multilabel --model NAME) on a data "
    "set; writes weights/last.pt and best.pt, results.csv and plots. Heads and backbones: "
    "`visiontool models --heads`. Multi-GPU: torchrun --nproc_per_node=N -m visiontool train ..."
)


def train(
    ctx: typer.Context,
    data: str = typer.Option(
        None, "--data", help="Data set folder, annotation file or spec (not with --resume)."
    ),
    task: str = typer.Option(
        "detect", "--task", help="detect, classify, single (largest object) or multilabel."
    ),
    box_weight: float = typer.Option(
        20.0, "--box-weight", help="single: loss = box L1 (px) + this x class cross-entropy."
    ),
    threshold: float = typer.Option(
        0.4, "--threshold", help="multilabel: a class is predicted at this score or above."
    ),
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry model (`visiontool models`): detector, classifier or single.",
    ),
    head: str = typer.Option(
        None,
        "--head",
        help="Compose a detector: head (default frcnn; `models --heads`) over --backbone.",
    ),
    backbone: str = typer.Option(
        None,
        "--backbone",
        help="Registered backbone (with --head; --task single; or --task classify or "
        "multilabel: a classifier over it).",
    ),
    fpn: bool = typer.Option(
        None, "--fpn/--no-fpn", help="Feature pyramid (default: the head's usual layout)."
    ),
    trainable_layers: int = typer.Option(None, "--trainable-layers", help="Backbone stages."),
    backbone_weights: str = typer.Option(
        None,
        "--backbone-weights",
        help="The backbone's own weights (a detector composed with --head, --task single, or a "
        "classifier over --backbone): DEFAULT (ImageNet), none or PATH.",
        show_default="none",
    ),
    weights: str = typer.Option(
        "none", "--weights", "-w", help="Start from a full model: DEFAULT, none or PATH."
    ),
    fpn_channels: int = typer.Option(256, "--fpn-channels", help="Feature width (detection)."),
    box_head: int = typer.Option(1024, "--box-head", help="Faster R-CNN box-head width."),
    arch: list[str] = list_option(
        "--arch",
        kind="option",
        help="The head's own options, e.g. noobj=0.5,multiscale=true for yolo (`visiontool "
        "models --heads` lists them).",
    ),
    returned_layers: list[str] = list_option(
        "--returned-layers", kind="int", help="Backbone stages feeding the head, e.g. 1,2,3,5."
    ),
    freeze: int = typer.Option(0, "--freeze", help="Freeze the first N backbone stages."),
    head_lr_mult: float = typer.Option(1.0, "--head-lr-mult", help="lr multiplier, new layers."),
    anchor_sizes: list[str] = list_option(
        "--anchor-sizes",
        kind="positive",
        groups=True,
        help="Anchor sizes in px, one per feature level, e.g. 32,64,128,256,512; or a group per "
        "level split by ';', e.g. '32,48;64,96'.",
    ),
    anchor_ratios: list[str] = list_option(
        "--anchor-ratios",
        kind="positive",
        groups=True,
        help="Anchor ratios width/height (2 = wide), e.g. 0.5,1,2 on every level; or a group per "
        "level split by ';'.",
    ),
    anchors: Path = typer.Option(None, "--anchors", help="anchors.json from `anchors fit`."),
    epochs: int = typer.Option(
        10, "--epochs", help="Passes over the training set (with --resume: the new total)."
    ),
    batch: int = typer.Option(4, "--batch", "-b", help="Images per step per process."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate (default by optimizer)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="Not on norms/biases."),
    warmup: float = typer.Option(1.0, "--warmup", help="Linear warmup, in epochs."),
    schedule: str = typer.Option(
        "cosine", "--schedule", help="lr schedule: cosine, step, onecycle or constant."
    ),
    accumulate: int = typer.Option(1, "--accumulate", help="Steps of gradient accumulation."),
    clip_grad: float = typer.Option(
        None, "--clip-grad", help="Max gradient norm (> 0; 0 or unset: no clipping)."
    ),
    ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the weights."),
    amp: bool = typer.Option(
        False, "--amp", help="Mixed precision: bf16/fp16 on GPU; bf16 on CPUs with AVX512-BF16/AMX."
    ),
    compile_: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile the network (a detector's backbone); pays off on long GPU runs.",
    ),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="NHWC weights and inputs (faster with --amp on GPUs)."
    ),
    augment_on: str = typer.Option(
        "cpu",
        "--augment-on",
        help="Where training images are augmented: cpu (loader workers) or device (the "
        "training GPU; workers only decode).",
    ),
    imgsz: int = typer.Option(
        None, "--imgsz", help="Input size (>= 32).", show_default="the model's"
    ),
    augment: str = typer.Option(
        None, "--augment", help="frcnn, ssd, classify, multilabel or none."
    ),
    workers: int = typer.Option(
        2, "--workers", help="Image-loading processes (DataLoader workers; 0: main process)."
    ),
    deterministic: bool = typer.Option(
        False, "--deterministic", help="Deterministic algorithms: repeatable runs, slower."
    ),
    val_every: int = typer.Option(1, "--val-every", help="Validate every N epochs."),
    metric: str = typer.Option(
        None,
        "--metric",
        help="best.pt metric (map50 / top1 / accuracy for single / map for multilabel).",
    ),
    patience: int = typer.Option(
        None, "--patience", help="Early stopping, in validations (0 or unset: off)."
    ),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue RUN/weights/last.pt with its recorded options (only --device, --workers, "
        "--epochs to train longer, --log-every may be given).",
    ),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="SyncBatchNorm under DDP."),
    name: str = typer.Option(
        None, "--name", help="Run folder runs/train/NAME (NAME2... if taken; see --exist-ok)."
    ),
    model_name: str = typer.Option(
        None, "--model-name", help="Model name stored in the checkpoint (default MODEL-Ncls)."
    ),
    log_every: int = typer.Option(20, "--log-every", help="Steps between log lines."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    out: Path = typer.Option(None, "--out", help="Output folder (default runs/train/exp*)."),
    exist_ok: bool = ExistOkOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    from visiontool.engine.train.trainer import Callbacks, TrainConfig, run_train

    console = Console(json_mode=json_out, quiet=quiet)
    config = TrainConfig(
        data=data, task=task, box_weight=box_weight, threshold=threshold, model=model,
        head=head, backbone=backbone, fpn=fpn,
        trainable_layers=trainable_layers, backbone_weights=backbone_weights, weights=weights,
        fpn_channels=fpn_channels, box_head=box_head, arch=dict(arch) if arch else None,
        returned_layers=list(returned_layers) if returned_layers else None,
        freeze=freeze, head_lr_mult=head_lr_mult,
        anchor_sizes=anchor_sizes, anchor_ratios=anchor_ratios,
        anchors=str(anchors) if anchors else None, epochs=epochs, batch=batch, lr=lr,
        optimizer=optimizer, weight_decay=weight_decay, warmup=warmup, schedule=schedule,
        accumulate=accumulate, clip_grad=clip_grad, ema=ema, amp=amp, compile=compile_,
        channels_last=channels_last, augment_on=augment_on, imgsz=imgsz,
        augment=augment, workers=workers, seed=seed, deterministic=deterministic,
        val_every=val_every, metric=metric, patience=patience, out=out, exist_ok=exist_ok,
        resume=str(resume) if resume else None, device=device, sync_bn=sync_bn,
        log_every=log_every, name=name, model_name=model_name, given=_given(ctx),
    )  # fmt: skip
    view = _TrainView(console, log_every=log_every)
    callbacks = Callbacks(on_step=view.on_step, on_epoch=view.on_epoch, on_log=view.log,
                          on_start=view.on_start, on_validate=view.on_validate)  # fmt: skip
    try:
        summary = run_train(config, callbacks)
    finally:
        view.stop()
    if summary.rank != 0:
        return
    if json_out:
        console.emit_json(summary.to_dict())
    view.on_end(summary)
    if summary.best_value is None:
        console.final("no validation score (no validation split, or nothing in it to score); "
                      f"results saved to {summary.out}")  # fmt: skip
    else:
        console.final(f"results saved to {summary.out}")


def _given(ctx: typer.Context) -> frozenset[str]:
    """The options typed on the command line (or set through the environment): with --resume
    these must agree with the recorded run; defaults never conflict."""
    names = set()
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            names.add(str(param.name))
    return frozenset(names)


class _TrainView:
    """What a person sees while training (modelled on Ultralytics' console): a header, per
    epoch a progress bar (losses, images/s, ETA of the whole run) and a validation bar on a
    terminal, or a plain line every --log-every steps and "validating N images" otherwise;
    then one aligned table row per epoch. Undefined values (-1) are shown as `-`.

    The table's header is printed once, above the first row. Plain output (CI logs) repeats it
    only when HEADER_EVERY lines or more have gone by since it was last printed, so a row is
    never read far from its column names, and short runs are not cluttered with copies."""

    HEADER_EVERY = 20

    def __init__(self, console: Console, *, log_every: int) -> None:
        self.console = console
        self.log_every = max(1, log_every)
        self.bar: Any = None
        self.task: Any = None
        self.run: RunInfo | None = None
        self.columns: list[tuple[str, str, int]] = []  # (header, row key, width)
        self.header_shown = False
        self.lines_since_header = 0  # lines printed since the table's header (plain output)
        self.first_step: tuple[float, int] | None = None  # (time, run-wide step index)

    @property
    def plain(self) -> bool:
        return self.console.plain or self.console.quiet

    # --- header ------------------------------------------------------------------------------

    def on_start(self, run: RunInfo) -> None:
        self.run = run
        if run.head:
            model = f"{run.head} head, {run.backbone} backbone" if run.backbone else run.head
        elif run.backbone:  # a registry model over a backbone of the user's (single)
            model = f"{run.registry_model}, {run.backbone} backbone"
        else:
            model = str(run.registry_model)
        amp = f"AMP {run.amp}" if run.amp else "AMP off"
        processes = _plural(run.world_size, "process", "processes")
        epochs = _plural(run.epochs, "epoch")
        if run.start_epoch > 1:
            epochs += f" (resuming at epoch {run.start_epoch})"
        lines = [
            f"train {run.model}: {model}, {run.imgsz} px, augment {run.augment}",
            f"  data    {run.data}: {_plural(run.train_images, 'train image')}, "
            f"{_plural(run.val_images, 'val image')}, {_plural(run.classes, 'class', 'classes')}",
            f"  train   {epochs}, batch {run.batch} x {processes}, {run.optimizer} lr "
            f"{_lr(run.lr)}, device {run.device}, {amp}",
            f"  run     {run.out}",
        ]
        for line in lines:
            self.console.log(line)

    # --- per step ------------------------------------------------------------------------------

    def on_step(self, info: StepInfo) -> None:
        import time

        done = (info.epoch - info.start_epoch) * info.steps + info.step
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step = (now, done)
        total = (info.epochs - info.start_epoch + 1) * info.steps
        t0, d0 = self.first_step
        eta = (now - t0) / (done - d0) * (total - done) if done > d0 else None
        losses = "  ".join(f"{_short(k)} {v:.3f}" for k, v in info.losses.items())
        losses = losses or f"loss {info.loss:.3f}"
        summed = f"loss {sum(info.losses.values()) if info.losses else info.loss:.3f}"
        tail = f"{info.images_per_s:.1f} img/s  ETA {_duration(eta)}"
        width = self.console.rich.width
        if self.plain:
            if info.step % self.log_every == 0 or info.step == info.steps:
                head = f"  {info.epoch}/{info.epochs}  step {info.step}/{info.steps}  "
                # a line never wraps: too wide, the losses fold into their sum (the epoch's
                # table row has each of them)
                if len(head) + len(losses) + 2 + len(tail) > width:
                    losses = summed
                self._line(f"{head}{losses}  {tail}")
            return
        description = f"{info.epoch}/{info.epochs}"
        # the bar keeps its width: on a narrow terminal the losses fold into their sum
        if (
            7 + 1 + 20 + 1 + len(f"{info.steps}/{info.steps}") + 1 + len(losses) + 2 + len(tail)
            > width
        ):
            losses = summed
        if self.task is None:
            self.task = self._bar().add_task(description, total=info.steps, info="")
        self.bar.update(self.task, completed=info.step, description=description,
                        info=f"{losses}  {tail}")  # fmt: skip

    def on_validate(self, done: int, total: int) -> None:
        if self.plain:
            if done == 0:
                self._line(f"  validating {_plural(total, 'image')}")
            return
        if self.task is not None and done == 0:
            self.bar.remove_task(self.task)
            self.task = None
        if self.task is None:
            self.task = self._bar().add_task("val", total=max(total, 1), info="")
        self.bar.update(self.task, completed=done, info="images")

    # --- per epoch -----------------------------------------------------------------------------

    def on_epoch(self, row: dict) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        if not self.columns:
            self.columns = _columns(row, self.run.task if self.run else "detect")
        if not self.header_shown or (self.plain and self.lines_since_header >= self.HEADER_EVERY):
            self._print(_table_line([h for h, _, _ in self.columns], self.columns))
            self.header_shown = True
            self.lines_since_header = 0
        epochs = self.run.epochs if self.run else row.get("epoch")
        cells = [_cell(key, row, epochs) for _, key, _ in self.columns]
        self._print(_table_line(cells, self.columns))
        self.lines_since_header += 1

    def on_end(self, summary: Any) -> None:
        """The best epoch and the validation per class (as `yolo val` shows it)."""
        self.stop()
        if summary.best_value is not None:
            self.console.log(f"best epoch {summary.best_epoch}: {summary.best_metric} "
                             f"{summary.best_value:.4f}")  # fmt: skip
        if not summary.per_class:
            return
        rows = summary.per_class
        detection = "instances" in rows[0]
        if detection:
            note = f"P and R at conf {_pr_conf()}"
        elif "top1" in rows[0]:
            top = rows[0]
            note = (f"top1 {_cell('top1', top, None)}, top5 {_cell('top5', top, None)}; "
                    "R = the class's top-1 accuracy")  # fmt: skip
        else:  # a task scored per image: its own columns; `all` is the mean over classes
            note = "all: every image" + (
                "; its AP, P, R and F1 the mean over classes" if "ap" in rows[0] else ""
            )
        self.console.log(f"validation of epoch {summary.per_class_epoch} ({note}):")
        columns = _per_class_columns(rows, detection=detection)
        self.console.log(_table_line([h for h, _, _ in columns], columns))
        for values in rows:
            self.console.log(_table_line([_cell(key, values, None) for _, key, _ in columns],
                                         columns))  # fmt: skip

    # --- output --------------------------------------------------------------------------------

    def _bar(self) -> Any:
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("{task.description:>7}"), BarColumn(bar_width=20),
                MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                console=self.console.rich, transient=True,
            )  # fmt: skip
            self.bar.start()
        return self.bar

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            self.console.log(text)

    def _line(self, text: str) -> None:
        self.console.log(text)
        self.lines_since_header += 1

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message, markup=False, highlight=False)
        else:
            self.console.log(message)
        self.lines_since_header += 1

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            self.task = None


_LOSS_NAMES = {
    "loss_classifier": "cls", "loss_box_reg": "box", "loss_objectness": "obj",
    "loss_rpn_box_reg": "rpn_box", "classification": "cls", "bbox_regression": "box",
    "bbox_ctrness": "ctr", "cls_loss": "cls_loss",
}  # fmt: skip


def _short(loss: str) -> str:
    """A loss's name in a column: torchvision's long names shortened (cls, box, obj...)."""
    if loss in _LOSS_NAMES:
        return _LOSS_NAMES[loss]
    return loss.removeprefix("loss_").removesuffix("_loss")


def _columns(row: dict, task: str) -> list[tuple[str, str, int]]:
    """The table's columns for this run: epoch, its losses, lr, the task's metrics
    (`TaskSpec.columns`), time."""
    from visiontool.tasks.spec import get_task

    other = ("epoch", "loss", "lr", "time_s", "images_per_s")
    losses = [k for k in row if k not in other and not k.startswith("val/")] or ["loss"]
    columns = [("epoch", "epoch", 7)]
    columns += [(_short(k), k, max(6, len(_short(k)))) for k in losses]
    columns.append(("lr", "lr", 7))
    columns += [(head, f"val/{key}", max(5, len(head))) for head, key in get_task(task).columns]
    columns.append(("time", "time_s", 6))
    return columns


PER_CLASS_HEADERS = {"precision": "P", "recall": "R", "f1": "F1", "ap": "AP",
                     "accuracy": "acc", "box_l1": "box_L1", "iou": "IoU"}  # fmt: skip


def _per_class_columns(rows: list[dict], *, detection: bool) -> list[tuple[str, str, int]]:
    """The end-of-training table: detection as `yolo val` (images, instances, P, R, mAP50,
    mAP50-95), classification images, P, R, F1 (all: their mean over classes); a task
    scored per image the keys its rows give."""
    columns = [("class", "class", max(5, *(len(r["class"]) for r in rows)))]
    if detection:
        return columns + [("images", "images", 6), ("instances", "instances", 9),
                          ("P", "precision", 5), ("R", "recall", 5), ("mAP50", "map50", 5),
                          ("mAP50-95", "map", 8)]  # fmt: skip
    if "top1" in rows[0]:
        return columns + [("images", "images", 6), ("P", "precision", 5), ("R", "recall", 5),
                          ("F1", "f1", 5)]  # fmt: skip
    keys = [k for k in rows[-1] if k != "class"]
    return columns + [(PER_CLASS_HEADERS.get(k, k), k, max(5, len(PER_CLASS_HEADERS.get(k, k))))
                      for k in keys]  # fmt: skip


def _cell(key: str, row: dict, epochs: Any) -> str:
    value = row.get(key)
    if key == "epoch":
        return f"{value}/{epochs}" if epochs else str(value)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                         and value < 0):  # fmt: skip
        return "-"
    if key == "lr":
        return _lr(float(value))
    if key == "time_s":
        return _duration(float(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table_line(cells: list[str], columns: list[tuple[str, str, int]]) -> str:
    """Cells padded to their column: text left (first column), numbers right."""
    parts = []
    for index, (cell, (_, _, width)) in enumerate(zip(cells, columns, strict=True)):
        parts.append(cell.ljust(width) if index == 0 else cell.rjust(width))
    return " ".join(parts).rstrip()


def _lr(value: float) -> str:
    return f"{value:.1e}"


def _duration(seconds: float | None) -> str:
    """12.3s, 4m05s, 1h02m; `-` when not known yet."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _pr_conf() -> float:
    from visiontool.engine.train.validate import PR_CONF

    return PR_CONF
