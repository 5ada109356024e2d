"""`visiontool train`: train or fine-tune a detector or classifier (also under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from visiontool.cli.common import Console, DeviceOpt, ExistOkOpt, JsonOpt, QuietOpt, SeedOpt

if TYPE_CHECKING:
    from visiontool.engine.train.trainer import StepInfo

HELP = (
    "Train a detector composed from parts (--head frcnn|retinanet|fcos|ssd|ssdlite --backbone "
    "NAME), a registry detector (--model NAME, e.g. frcnn-mobile-320 --weights DEFAULT) or a "
    "classifier (--task classify --model NAME) on a data set; writes weights/last.pt and "
    "best.pt, results.csv and plots. Heads and backbones: `visiontool models --heads`. "
    "Multi-GPU: torchrun --nproc_per_node=N -m visiontool train ..."
)


def _floats(values: list[str] | None, what: str) -> list[float] | None:
    if not values:
        return None
    try:
        return [float(v) for item in values for v in item.replace(",", " ").split()]
    except ValueError as exc:
        raise typer.BadParameter(f"{what} takes numbers, got {values}") from exc


def train(
    ctx: typer.Context,
    data: str = typer.Option(
        None, "--data", help="Data set folder, annotation file or spec (not with --resume)."
    ),
    task: str = typer.Option("detect", "--task", help="detect or classify."),
    model: str = typer.Option(
        None, "--model", "-m", help="Registry model (`visiontool models`): detector or classifier."
    ),
    head: str = typer.Option(
        None, "--head", help="Compose a detector: head family (default frcnn) over --backbone."
    ),
    backbone: str = typer.Option(None, "--backbone", help="Registered backbone (with --head)."),
    fpn: bool = typer.Option(
        None, "--fpn/--no-fpn", help="Feature pyramid (default: the head's usual layout)."
    ),
    trainable_layers: int = typer.Option(None, "--trainable-layers", help="Backbone stages."),
    backbone_weights: str = typer.Option(
        "none", "--backbone-weights", help="DEFAULT (ImageNet), none or PATH."
    ),
    weights: str = typer.Option(
        "none", "--weights", "-w", help="Start from a full model: DEFAULT, none or PATH."
    ),
    fpn_channels: int = typer.Option(256, "--fpn-channels", help="Feature width (detection)."),
    box_head: int = typer.Option(1024, "--box-head", help="Faster R-CNN box-head width."),
    returned_layers: list[int] = typer.Option(
        None, "--returned-layers", help="Backbone stages feeding the head (e.g. 1 2 3 5)."
    ),
    freeze: int = typer.Option(0, "--freeze", help="Freeze the first N backbone stages."),
    head_lr_mult: float = typer.Option(1.0, "--head-lr-mult", help="lr multiplier, new layers."),
    anchor_sizes: list[str] = typer.Option(None, "--anchor-sizes", help="Anchor sizes (px)."),
    anchor_ratios: list[str] = typer.Option(None, "--anchor-ratios", help="Aspect ratios."),
    anchors: Path = typer.Option(None, "--anchors", help="anchors.json from `anchors fit`."),
    epochs: int = typer.Option(10, "--epochs"),
    batch: int = typer.Option(4, "--batch", "-b", help="Images per step per process."),
    lr: float = typer.Option(None, "--lr", help="Base learning rate (default by optimizer)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", help="Not on norms/biases."),
    warmup: float = typer.Option(1.0, "--warmup", help="Linear warmup, in epochs."),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine, step, onecycle."),
    accumulate: int = typer.Option(1, "--accumulate", help="Steps of gradient accumulation."),
    clip_grad: float = typer.Option(None, "--clip-grad", help="Max gradient norm."),
    ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the weights."),
    amp: bool = typer.Option(False, "--amp", help="bf16/fp16 autocast on GPU."),
    imgsz: int = typer.Option(None, "--imgsz", help="Input size."),
    augment: str = typer.Option(None, "--augment", help="frcnn, ssd, classify or none."),
    workers: int = typer.Option(2, "--workers", help="DataLoader processes."),
    deterministic: bool = typer.Option(False, "--deterministic"),
    val_every: int = typer.Option(1, "--val-every", help="Validate every N epochs."),
    metric: str = typer.Option(None, "--metric", help="best.pt metric (map50 / top1)."),
    patience: int = typer.Option(None, "--patience", help="Early stopping, in validations."),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue RUN/weights/last.pt with its recorded options (only --device, --workers, "
        "--epochs to train longer, --log-every may be given).",
    ),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="SyncBatchNorm under DDP."),
    name: str = typer.Option(None, "--name", help="Model name stored in the checkpoint."),
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
        data=data, task=task, model=model, head=head, backbone=backbone, fpn=fpn,
        trainable_layers=trainable_layers, backbone_weights=backbone_weights, weights=weights,
        fpn_channels=fpn_channels, box_head=box_head,
        returned_layers=list(returned_layers) if returned_layers else None,
        freeze=freeze, head_lr_mult=head_lr_mult,
        anchor_sizes=_floats(anchor_sizes, "--anchor-sizes"),
        anchor_ratios=_floats(anchor_ratios, "--anchor-ratios"),
        anchors=str(anchors) if anchors else None, epochs=epochs, batch=batch, lr=lr,
        optimizer=optimizer, weight_decay=weight_decay, warmup=warmup, schedule=schedule,
        accumulate=accumulate, clip_grad=clip_grad, ema=ema, amp=amp, imgsz=imgsz,
        augment=augment, workers=workers, seed=seed, deterministic=deterministic,
        val_every=val_every, metric=metric, patience=patience, out=out, exist_ok=exist_ok,
        resume=str(resume) if resume else None, device=device, sync_bn=sync_bn,
        log_every=log_every, name=name, given=_given(ctx),
    )  # fmt: skip
    view = _TrainView(console, log_every=log_every)
    try:
        summary = run_train(
            config,
            Callbacks(on_step=view.on_step, on_epoch=view.on_epoch, on_log=console.log),
        )
    finally:
        view.stop()
    if summary.rank != 0:
        return
    if json_out:
        console.emit_json(summary.to_dict())
    best = f"{summary.best_metric} {summary.best_value:.4f} (epoch {summary.best_epoch})" if (
        summary.best_value is not None) else "no validation score (no validation split, or " \
        "nothing in it to score)"  # fmt: skip
    console.final(f"best {best}; results saved to {summary.out}")


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
    """A rich progress bar per epoch on a terminal; a log line every N steps otherwise."""

    def __init__(self, console: Console, *, log_every: int) -> None:
        self.console = console
        self.log_every = max(1, log_every)
        self.bar = None
        self.task = None

    def on_step(self, info: StepInfo) -> None:
        text = (
            f"epoch {info.epoch}/{info.epochs} step {info.step}/{info.steps} "
            f"loss {info.loss:.4f} lr {info.lr:.2e} {info.images_per_s:.1f} img/s"
        )
        if self.console.plain or self.console.quiet:
            if info.step % self.log_every == 0 or info.step == info.steps:
                self.console.log(text)
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                console=self.console.err, transient=True,
            )  # fmt: skip
            self.bar.start()
        if self.task is None:
            self.task = self.bar.add_task(text, total=info.steps)
        self.bar.update(self.task, completed=info.step, description=text)

    def on_epoch(self, row: dict) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        parts = [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()]
        self.console.log("  ".join(parts))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
