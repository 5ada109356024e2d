"""The training engine: one loop for every task, on CPU, one GPU or many (DDP).

`run_train(config)` builds the model and data, then runs epochs of
forward -> loss -> backward -> (accumulate) -> clip -> step -> schedule -> EMA, validates every
`val_every` epochs, writes `weights/last.pt` and `weights/best.pt`, `results.csv` and plots, and
stops early after `patience` epochs without improvement. Rank 0 also draws the pictures of
`pictures` (labels, first batch, the best epoch's PR curve and confusion matrix); a picture
that fails is a warning, never the end of the run. `resume` restores the model, optimizer,
scheduler, scaler, EMA, position (epoch and step) and random states, so an interrupted run ends
with the same weights as an uninterrupted one (CPU; any --workers: each sample's augmentation
has its own seed, see `state.SeededSamples`). A resumed run keeps its recorded options; only
RESUME_MAY_CHANGE may differ. A failing validation saves last.pt before it reports.

What differs between tasks (detect, classify, single, multilabel: targets, loss, validation
numbers, the default --metric) comes from the task's spec (`visiontool.tasks`); the loop itself
does not know the task's name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from visiontool.distributed import DistInfo
from visiontool.errors import ConfigError, UnknownName, VisiontoolError


class TrainingDiverged(VisiontoolError):
    """The loss became NaN or infinite; the last good state was saved."""

    exit_code = 1


class ValidationFailed(VisiontoolError):
    """Validation raised after an epoch; its trained state was saved to last.pt first."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class TrainConfig:
    data: str | None = None  # required, except with `resume` (the checkpoint records it)
    task: str = "detect"  # detect, classify, single or multilabel (`visiontool.tasks`)
    box_weight: float = 20.0  # single: loss = box L1 (px) + box_weight x class cross-entropy
    threshold: float = 0.4  # multilabel: a class is predicted at score >= threshold
    model: str | None = None  # a registry model (`visiontool models`); None: see `head`
    head: str | None = None  # compose a detector: this head over `backbone` (default frcnn)
    backbone: str | None = None
    fpn: bool | None = None
    trainable_layers: int | None = None
    backbone_weights: str | None = None
    weights: str | None = None
    fpn_channels: int = 256
    box_head: int = 1024
    arch: dict[str, Any] | None = None  # the head's own options (`HeadSpec.arch_options`)
    returned_layers: list[int] | None = None
    freeze: int = 0
    head_lr_mult: float = 1.0
    anchor_sizes: list[Any] | None = None
    anchor_ratios: list[Any] | None = None
    anchors: str | None = None
    epochs: int = 10
    batch: int = 4
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: float = 1.0  # epochs
    schedule: str = "cosine"
    accumulate: int = 1
    clip_grad: float | None = None
    ema: bool = False
    ema_decay: float = 0.999
    amp: bool = False
    compile: bool = False  # torch.compile the network (a detector's backbone)
    channels_last: bool = False  # NHWC weights and inputs (tensor cores with --amp on a GPU)
    augment_on: str = "cpu"  # cpu: in the loader workers; device: on the training device
    imgsz: int | None = None
    augment: str | None = None
    workers: int = 2
    seed: int = 0
    deterministic: bool = False
    val_every: int = 1
    metric: str | None = None
    patience: int | None = None
    out: Path | None = None
    exist_ok: bool = False
    resume: str | None = None
    device: str = "auto"
    sync_bn: bool = False
    log_every: int = 20
    format: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    name: str | None = None  # run folder runs/train/NAME (NAME2, ... if taken; see exist_ok)
    model_name: str | None = None  # stored in the checkpoint; None: <model or head>-<N>cls
    # the options the user set (the CLI fills it from the command line); None: every field
    # that differs from its default. With `resume`, each must agree with the recorded run
    # unless it is in RESUME_MAY_CHANGE. Not a training argument: not written to args.json.
    given: frozenset[str] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("given", None)
        data["out"] = str(self.out) if self.out else None
        return data


# What `--resume` may change: where and how fast it runs, how long it trains. Everything else
# is the recorded run's; a different value is a usage error (it would be silently ignored).
RESUME_MAY_CHANGE = (
    "device", "workers", "epochs", "log_every", "exist_ok", "compile", "channels_last",
    "augment_on",
)  # fmt: skip


@dataclass
class TrainSummary:
    out: str
    epochs_run: int
    best_metric: str
    best_value: float | None
    best_epoch: int | None
    last: str
    best: str
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0  # under torchrun, only rank 0 reports
    # the validation per class of `per_class_epoch` (the best epoch when it ran in this
    # process), `all` first; detection: class, images, instances, precision, recall, map50,
    # map; classification: class, images, precision, recall, f1 (all: + top1, top5); single:
    # class, images, accuracy, box_l1, iou; multilabel: class, images, ap, precision, recall,
    # f1; -1: undefined
    per_class: list[dict[str, Any]] = field(default_factory=list)
    per_class_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepInfo:
    """What a progress callback sees after each optimizer step."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)  # the epoch's running means
    start_epoch: int = 1  # the first epoch this process trains (a resumed run starts later)


@dataclass
class RunInfo:
    """What a run is about to do: the values actually used (defaults resolved)."""

    task: str
    model: str  # the name stored in the checkpoint
    head: str | None
    backbone: str | None
    registry_model: str | None
    imgsz: int
    augment: str
    data: str
    train_images: int
    val_images: int
    classes: int
    epochs: int
    start_epoch: int  # 1-based
    batch: int
    world_size: int
    device: str
    amp: str | None  # autocast dtype, None: off
    optimizer: str
    lr: float
    metric: str
    out: str


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_log: Callable[[str], None] | None = None
    on_start: Callable[[RunInfo], None] | None = None  # once, before the first epoch
    # validation progress: (images done, images to do) on this process
    on_validate: Callable[[int, int], None] | None = None


def run_train(config: TrainConfig, callbacks: Callbacks | None = None) -> TrainSummary:
    """Train as configured; see the module docstring."""
    from visiontool.distributed import cleanup, init_distributed, local_device
    from visiontool.runtime import resolve_device

    _validate(config)
    device = resolve_device(config.device)
    dist = init_distributed(device)
    try:
        trainer = Trainer(config, local_device(device, dist), dist, callbacks or Callbacks())
        try:
            return trainer.fit()
        finally:
            trainer.release_out()
    finally:
        cleanup(dist)


TRAIN_OWNED = (
    "weights/last.pt",
    "weights/best.pt",
    "weights/.*.tmp",
    "results.csv",
    "args.json",
    "losses.png",
    "metrics.png",
    "labels.png",
    "train_batch.jpg",
    "pr_curve.png",
    "confusion_matrix.png",
    ".*.tmp",
)
"""What `train --exist-ok` removes from a reused --out: the files an earlier training run
wrote there (nothing else), so old checkpoints and curves never mix with the new run's."""


def validation_metrics(task: str) -> tuple[str, ...]:
    """What --metric may name (validation reports them), so a wrong one is refused before any
    epoch runs."""
    from visiontool.tasks.spec import get_task

    return get_task(task).metrics


# options of one task: (option, the task it belongs to)
TASK_OPTIONS = (("box_weight", "single"), ("threshold", "multilabel"))


def _validate(config: TrainConfig) -> None:
    from visiontool.tasks.spec import get_task

    if not config.data and not config.resume:
        raise ConfigError(
            "missing option --data: the data set to train on (or --resume RUN/weights/last.pt "
            "to continue a run, which needs no other option)"
        )
    task = get_task(config.task)  # an unknown --task is an UnknownName naming the nearest
    given = set() if config.resume else _given_options(config)  # resumed: checked on merge
    for name, owner in TASK_OPTIONS:
        if name in given and task.name != owner:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} applies to --task {owner} only (this run: --task "
                              f"{task.name}); drop it or pass --task {owner}")  # fmt: skip
    if config.augment_on not in ("cpu", "device"):
        raise ConfigError(f"--augment-on must be cpu or device, got {config.augment_on!r}")
    if not math.isfinite(config.box_weight) or config.box_weight < 0:
        raise ConfigError(f"--box-weight must be a number >= 0, got {config.box_weight}")
    if not 0.0 < config.threshold < 1.0:
        raise ConfigError(f"--threshold must be in (0, 1), got {config.threshold}")
    for name in ("epochs", "batch", "accumulate", "val_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if config.name and config.out is not None:
        raise ConfigError("--name NAME writes to runs/train/NAME; --out DIR names the folder "
                          "itself: pass one of them")  # fmt: skip
    from visiontool.engine.train.setup import check_model_options, check_numbers

    check_numbers(config)
    if not config.resume:  # a resumed run's model is its checkpoint's (checked on merge)
        check_model_options(config)
    if config.metric is not None:
        known = validation_metrics(config.task)
        if config.metric not in known:
            raise UnknownName("--metric", config.metric, known)


class Trainer:
    """Holds the pieces of one run; `fit()` runs it."""

    def __init__(self, cfg: TrainConfig, device: Any, dist: DistInfo, cb: Callbacks) -> None:
        import torch

        from visiontool.runtime import seed_everything

        self.cfg, self.device, self.dist, self.cb = cfg, device, dist, cb
        self.resume_state = self._read_resume() if cfg.resume else None
        if self.resume_state is not None:
            self.cfg = cfg = _merge_resume_config(cfg, self.resume_state)
        seed_everything(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self._out_dir = None
        self.out = self._output_dir()  # checked and locked before any data or model is loaded
        try:
            self._build()
        except BaseException:
            self.release_out(failed=True)
            raise
        if self._out_dir is not None:  # --exist-ok: the earlier run's files go only now
            self._out_dir.clear_previous()

    # --- setup -----------------------------------------------------------------------------

    def _build(self) -> None:
        import torch

        from visiontool.engine.train import setup
        from visiontool.engine.train.optim import build_optimizer, build_scheduler, ema_model
        from visiontool.models.finetune import param_groups
        from visiontool.runtime import autocast_dtype
        from visiontool.tasks.spec import get_task

        cfg = self.cfg
        self.task = get_task(cfg.task)
        self.train_set, self.val_set = setup.open_training_data(cfg)
        module, self.info, new_params = setup.build_for_training(cfg, self.train_set)
        self.augment = setup.attach_transforms(cfg, self.train_set, self.val_set, self.info)
        self.device_augment = setup.move_augmentation(cfg, self.train_set, self.device)
        module.to(self.device)
        if cfg.channels_last:  # before the optimizer: it holds these parameters
            module.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.dist.enabled:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        self.model = module
        lr = cfg.lr if cfg.lr is not None else _default_lr(cfg)
        self.lr = lr
        groups = param_groups(
            module, lr=lr, weight_decay=cfg.weight_decay, head_lr_mult=cfg.head_lr_mult,
            new_param_names=new_params,
        )  # fmt: skip
        self.optimizer = build_optimizer(groups, name=cfg.optimizer, lr=lr, momentum=cfg.momentum)
        self.loader, self.sampler = self._train_loader()
        self.steps_per_epoch = math.ceil(len(self.loader) / cfg.accumulate)
        total = self.steps_per_epoch * cfg.epochs
        warmup = int(round(cfg.warmup * self.steps_per_epoch))
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, total=total, warmup=warmup)
        self.amp_dtype = autocast_dtype(self.device, training=True) if cfg.amp else None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.ema = ema_model(module, cfg.ema_decay) if cfg.ema else None
        if cfg.compile:  # after the EMA copy, which stays plain
            compiled = setup.compile_network(module)
            self.log(f"--compile: torch.compile on {compiled} (the first steps compile)")
        self.ddp = self._wrap_ddp(module)
        self.metric = cfg.metric or self.task.default_metric
        self.start_epoch, self.start_step = 0, 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.per_class: list[dict[str, Any]] = []
        self.best_per_class: tuple[int, list[dict[str, Any]]] | None = None
        self.last_per_class: tuple[int, list[dict[str, Any]]] | None = None
        self.val_plots: Any = None  # the last validation's PlotInputs
        self.best_plots: tuple[int, Any] | None = None  # (epoch, PlotInputs) of the best
        self._step_in_epoch = 0
        self._partial: tuple[dict[str, float], int] = ({}, 0)
        # where a resume would continue: (epoch, optimizer steps done in it); an epoch whose
        # row is written and saved is (epoch + 1, 0)
        self._position = (0, 0)
        if self.resume_state is not None:
            self._restore(self.resume_state)

    def _train_loader(self) -> tuple[Any, Any]:
        from torch.utils.data import DataLoader, DistributedSampler

        from visiontool.data.collate import detection_collate
        from visiontool.engine.train.state import SeededSamples

        cfg = self.cfg
        # The same sampler in every mode: N ranks with batch B see exactly the batches one
        # process with batch N*B sees, which keeps DDP runs equivalent to single-process ones.
        import torch

        sampler = ResumableSampler(
            DistributedSampler(
                self.train_set,
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=cfg.seed,
                drop_last=False,
            )
        )
        # each sample's augmentation under its own seed: the same on resume, whichever worker
        self.samples = SeededSamples(
            self.train_set, cfg.seed, with_keys=self.device_augment is not None
        )
        loader = DataLoader(
            self.samples,
            batch_size=cfg.batch,
            sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=detection_collate,
            pin_memory=self.device.type == "cuda",
            # workers live across epochs (no re-fork and re-import each epoch): the sampler's
            # (epoch, index) keys carry what changes between epochs
            persistent_workers=cfg.workers > 0,
            generator=torch.Generator(),  # worker seeds, kept off the global RNG
        )
        return loader, sampler

    def _wrap_ddp(self, module: Any) -> Any:
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=False)

    def _output_dir(self) -> Path:
        """Rank 0 checks, creates and locks the folder (`io.paths.prepare_out`) and hands its
        path, or its refusal, to every rank (`main_decides`), so all processes stop with rank 0's
        own message. A resumed run writes into its own folder."""
        from visiontool.distributed import main_decides

        def claim() -> str:
            self._out_dir = self._prepare_out()
            return str(self._out_dir.path)

        try:
            return Path(main_decides(claim, self.dist))
        except BaseException:  # the claim stood but telling the others failed: undo it
            self.release_out(failed=True)
            raise

    def _prepare_out(self) -> Any:
        from visiontool.io.paths import prepare_out

        data = Path(str(self.cfg.data)) if self.cfg.data else None
        reads = {"inputs": [], "recursive_inputs": []}
        if data is not None and data.exists():
            reads["recursive_inputs" if data.is_dir() else "inputs"].append(data)
        if self.cfg.resume:
            out, exist_ok, owned = Path(self.cfg.resume).resolve().parent.parent, True, ()
        else:
            out, exist_ok, owned = self.cfg.out, self.cfg.exist_ok, TRAIN_OWNED
            if self.cfg.name and out is None:
                out = _named_run(self.cfg.name, exist_ok=exist_ok)
        return prepare_out(out, "train", exist_ok=exist_ok, owned=owned, on_log=self.log,
                           clear_later=True, holds_run=_holds_train_run, **reads)  # fmt: skip

    def release_out(self, *, failed: bool = False) -> None:
        """Unlock the output folder (run_train calls it when the run ends)."""
        if self._out_dir is not None:
            self._out_dir.release(failed=failed)

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> TrainSummary:
        if self.dist.is_main:
            self._write_args()
        run = self.run_info()
        if self.cb.on_start is not None and self.dist.is_main:
            self.cb.on_start(run)
        else:
            self.log(
                f"training {run.model} on {run.train_images} images ({run.classes} classes), "
                f"{_plural(run.epochs, 'epoch')}, batch {run.batch} x "
                f"{_plural(run.world_size, 'process', 'processes')}, device {run.device}"
            )
        if not self.cfg.resume or not (self.out / "labels.png").exists():
            self._picture("labels.png", self._draw_labels)
        stopped_early = False
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                row = self._epoch(epoch)
                if self._should_stop(row, epoch):
                    stopped_early = True
                    break
        except KeyboardInterrupt:
            self.log("interrupted: saving weights/last.pt")
            self._save("last.pt", epoch=self._position[0], step=self._position[1])
            raise
        if self.best_plots is not None:
            self._picture("pr_curve.png and confusion_matrix.png", self._draw_validation)
        return TrainSummary(
            out=str(self.out),
            epochs_run=len(self.history),
            best_metric=self.metric,
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            last=str(self.out / "weights" / "last.pt"),
            best=str(self.out / "weights" / "best.pt"),
            stopped_early=stopped_early,
            history=self.history,
            rank=self.dist.rank,
            per_class=(self.best_per_class or self.last_per_class or (None, []))[1],
            per_class_epoch=(self.best_per_class or self.last_per_class or (None, []))[0],
        )

    def run_info(self) -> RunInfo:
        """The run as it will train: every default resolved."""
        from visiontool.engine.train.setup import resolve_model_choice

        model, head = resolve_model_choice(self.cfg)
        build = self.info.build
        return RunInfo(
            task=self.cfg.task,
            model=self.info.name,
            head=head,
            backbone=build.get("backbone"),
            registry_model=model,
            imgsz=int(self.info.input_size),
            augment=self.augment,
            data=str(self.cfg.data),
            train_images=len(self.train_set),
            val_images=len(self.val_set) if self.val_set is not None else 0,
            classes=len(self.info.classes),
            epochs=self.cfg.epochs,
            start_epoch=self.start_epoch + 1,
            batch=self.cfg.batch,
            world_size=self.dist.world_size,
            device=str(self.device),
            amp=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
            optimizer=self.cfg.optimizer,
            lr=self.lr,
            metric=self.metric,
            out=str(self.out),
        )

    def resolved_args(self) -> dict[str, Any]:
        """The config with the defaults this run resolved filled in (args.json): the model or
        head, backbone and pyramid, image size, augmentation, lr, metric, device, folder."""
        args = self.cfg.to_dict()
        from visiontool.engine.train.setup import resolve_model_choice

        model, head = resolve_model_choice(self.cfg)
        args.update(model=model, head=head, imgsz=int(self.info.input_size), augment=self.augment,
                    lr=self.lr, metric=self.metric, device=str(self.device), out=str(self.out),
                    model_name=self.info.name)  # fmt: skip
        if head is not None:  # a composed detector records how it was built
            build = self.info.build
            for key in ("backbone", "fpn", "trainable_layers", "returned_layers",
                        "anchor_sizes", "anchor_ratios"):  # fmt: skip
                if args.get(key) is None and build.get(key) is not None:
                    args[key] = build[key]
        if args.get("backbone") is None and self.info.build.get("backbone") is not None:
            args["backbone"] = self.info.build["backbone"]  # e.g. the single-object model's
        for key in ("backbone_weights", "weights"):
            if args.get(key) is None:
                args[key] = "none"
        return args

    def _epoch(self, epoch: int) -> dict[str, Any]:
        from visiontool.runtime import seed_everything

        cfg = self.cfg
        skip = self.start_step if epoch == self.start_epoch else 0
        if skip == 0 or self.resume_state is None:
            seed_everything(cfg.seed + 1000 * epoch + self.dist.rank)
        self.resume_state = None
        self.sampler.set_epoch(epoch)
        self.samples.epoch = epoch
        # Resuming mid-epoch: the same shuffled order, minus the batches already trained on.
        self.sampler.skip = skip * cfg.accumulate * cfg.batch
        self.loader.generator.manual_seed(cfg.seed + epoch)
        self.ddp.train()
        started = time.perf_counter()
        totals, seen = self._partial if skip else ({}, 0)  # a resumed epoch's running sums
        totals = dict(totals)
        self._partial = (dict(totals), seen)
        self._step_in_epoch = skip
        self._position = (epoch, skip)
        n_micro = len(self.loader)
        for micro, (images, targets, *keys) in enumerate(self.loader, start=1):
            if self.device_augment is not None:  # the workers only decoded
                images, targets = self.device_augment(images, targets, keys[0])
            if epoch == 0 and micro == 1 and skip == 0:
                self._picture("train_batch.jpg", partial(self._draw_batch, images, targets))
            losses = self._forward(images, targets)
            loss = sum(losses.values())
            # backward is queued before the loss is read: reading it waits for the GPU, which
            # would otherwise idle between the forward and the backward. A non-finite loss
            # then stops the run before any optimizer step uses its gradients
            self.scaler.scale(loss / cfg.accumulate).backward()
            if not math.isfinite(float(loss.detach())):
                self._save("last.pt", epoch=epoch, step=self._step_in_epoch)
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{self._step_in_epoch + 1}; last good state saved to "
                    f"{self.out / 'weights' / 'last.pt'} (try a lower --lr or --clip-grad)"
                )
            seen += len(images)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(images)
            if micro % cfg.accumulate == 0 or micro == n_micro:
                self._optimizer_step()
                self._step_in_epoch += 1
                # the running sums a resume continues from: only whole optimizer steps, so a
                # micro-batch redone after an interrupt is not counted twice
                self._partial = (dict(totals), seen)
                self._position = (epoch, self._step_in_epoch)
                self._report_step(epoch, float(loss.detach()), seen, started, totals)
        elapsed = time.perf_counter() - started
        row = {"epoch": epoch + 1}
        row.update({k: v / max(1, seen) for k, v in totals.items()})
        row["loss"] = sum(v for v in totals.values()) / max(1, seen)
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["time_s"] = round(elapsed, 3)
        row["images_per_s"] = round(seen * self.dist.world_size / max(elapsed, 1e-9), 3)
        if self.val_set is not None and ((epoch + 1) % cfg.val_every == 0 or
                                         epoch + 1 == cfg.epochs):  # fmt: skip
            row.update(self._validate_safely(epoch))
        self.history.append(row)
        self._position = (epoch + 1, 0)  # from here an interrupt saves the epoch as done
        self._end_epoch(row, epoch)
        return row

    def _forward(self, images: list[Any], targets: list[Any]) -> dict[str, Any]:
        """The losses of one batch: a model without a task loss computes its own from the
        targets (torchvision's detector interface); a classifier's logits are scored by it."""
        import torch

        from visiontool.engine.predict.predictor import normalize_for_model
        from visiontool.runtime import autocast

        images = [image.to(self.device, non_blocking=True) for image in images]
        prepared = self.task.targets(targets, self.device)
        with autocast(self.device, self.amp_dtype):
            if self.task.loss is None:
                return self.ddp(images, prepared)
            batch = normalize_for_model(torch.stack(images), self.info.preprocess)
            if self.cfg.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = self.ddp(batch)
            logits = logits[0] if isinstance(logits, tuple) else logits  # GoogLeNet aux
            return self.task.loss(logits, prepared)

    def _optimizer_step(self) -> None:
        import torch

        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def _report_step(
        self, epoch: int, loss: float, seen: int, started: float, totals: dict[str, float]
    ) -> None:
        if self.cb.on_step is None or not self.dist.is_main:
            return
        rate = seen * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
        info = StepInfo(
            epoch=epoch + 1,
            epochs=self.cfg.epochs,
            step=self._step_in_epoch,
            steps=self.steps_per_epoch,
            loss=loss,
            lr=self.optimizer.param_groups[0]["lr"],
            images_per_s=rate,
            losses={k: v / max(1, seen) for k, v in totals.items()},
            start_epoch=self.start_epoch + 1,
        )
        self.cb.on_step(info)

    def _validate_safely(self, epoch: int) -> dict[str, float]:
        """`_validate`, never at the cost of the epoch just trained: if it fails, last.pt is
        saved at the end of the epoch's training (a resume re-runs only the validation) and
        the failure is one line naming it."""
        try:
            return self._validate()
        except Exception as exc:
            self._save("last.pt", epoch=epoch, step=self._step_in_epoch)
            last = self.out / "weights" / "last.pt"
            what = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValidationFailed(
                f"validation after epoch {epoch + 1} failed ({type(exc).__name__}"
                f"{': ' + what if what else ''}); the epoch's trained weights are saved in "
                f"{last}: fix the validation split ({self.cfg.data}, split "
                f"{self.cfg.val_split!r}) and continue with --resume {last}",
                exit_code=getattr(exc, "exit_code", 1),
            ) from exc

    def _validate(self) -> dict[str, float]:
        from visiontool.engine.train.setup import uncompiled
        from visiontool.engine.train.validate import (
            classifier_report,
            detector_report,
            task_report,
        )

        module = self.ema.module if self.ema is not None else self.model
        progress = self.cb.on_validate if self.dist.is_main else None
        if progress is not None:
            progress(0, len(range(self.dist.rank, len(self.val_set), self.dist.world_size)))
        kwargs = dict(info=self.info, device=self.device, batch=self.cfg.batch,
                      workers=self.cfg.workers, dist=self.dist, progress=progress)  # fmt: skip
        with uncompiled(module):  # validation predicts from two threads at once
            if self.task.score is not None:  # scored per image by the task itself
                report = task_report(module, self.val_set, task=self.task, **kwargs)
            else:
                report_of = detector_report if self.task.output == "boxes" else classifier_report
                report = report_of(module, self.val_set, **kwargs)
        self.per_class = report.per_class
        self.val_plots = report.plots if self.dist.is_main else None
        return {f"val/{k}": v for k, v in report.metrics.items()}

    def _end_epoch(self, row: dict[str, Any], epoch: int) -> None:
        value = row.get(f"val/{self.metric}")
        if self.val_set is not None and f"val/{self.metric}" not in row and \
                epoch + 1 == self.cfg.epochs:  # fmt: skip
            raise ConfigError(
                f"--metric {self.metric!r} is not a validation metric "
                f"(have: {', '.join(k[4:] for k in row if k.startswith('val/'))})"
            )
        if value is not None and value < 0:  # undefined (-1, as pycocotools): no ground truth
            self.log(
                f"val/{self.metric} is undefined (-1) after epoch {epoch + 1}: the validation "
                "split has nothing to score (no images, or no boxes); it neither improves "
                "nor counts against --patience"
            )
            value = None
        improved = value is not None and (self.best_value is None or value > self.best_value)
        if self.per_class and f"val/{self.metric}" in row:
            self.last_per_class = (epoch + 1, self.per_class)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch + 1, 0
            if self.per_class:
                self.best_per_class = (epoch + 1, self.per_class)
            if self.val_plots is not None:
                self.best_plots = (epoch + 1, self.val_plots)
        elif value is not None:
            self.bad_epochs += 1
        self.val_plots = None  # only the best epoch's are kept
        if self.dist.is_main:
            from visiontool.engine.train.log import append_results, plot_results

            self._save("last.pt", epoch=epoch + 1, step=0)
            # until a validation scores something, best.pt follows last.pt
            if improved or self.best_value is None:
                self._save("best.pt", epoch=epoch + 1, step=0)
            append_results(self.out / "results.csv", row)
            plot_results(self.out / "results.csv", self.out, panels=self.task.panels)
        if self.cb.on_epoch is not None and self.dist.is_main:
            self.cb.on_epoch(row)

    def _should_stop(self, row: dict[str, Any], epoch: int) -> bool:
        patience = self.cfg.patience
        if patience and self.bad_epochs >= patience and epoch + 1 < self.cfg.epochs:
            self.log(f"early stop: no {self.metric} improvement in {patience} validations")
            return True
        return False

    # --- pictures --------------------------------------------------------------------------

    def _picture(self, name: str, draw: Callable[[], object]) -> None:
        """Rank 0 draws; a failure is one warning line (`pictures.drawn`)."""
        if self.dist.is_main:
            from visiontool.engine.train.pictures import drawn

            drawn(name, draw, self.log)

    def _draw_labels(self) -> None:
        from visiontool.engine.train.pictures import LABELS, write_labels

        write_labels(self.train_set, self.out / LABELS)

    def _draw_batch(self, images: list[Any], targets: list[Any]) -> None:
        from visiontool.engine.train.pictures import TRAIN_BATCH, write_train_batch

        write_train_batch(images, targets, self.info.classes, self.out / TRAIN_BATCH)

    def _draw_validation(self) -> None:
        from visiontool.engine.train.pictures import write_validation_plots

        epoch, plots = self.best_plots  # type: ignore[misc]
        write_validation_plots(plots, self.out, epoch=epoch)

    # --- checkpoints -----------------------------------------------------------------------

    def _save(self, name: str, *, epoch: int, step: int) -> None:
        """last.pt holds everything `--resume` needs; best.pt only the weights to deploy."""
        if not self.dist.is_main:
            return
        from visiontool.engine.train.state import rng_state
        from visiontool.io.checkpoint import make_checkpoint, save_checkpoint

        weights = self.ema.module if self.ema is not None else self.model
        state: dict[str, Any] = {
            "epoch": epoch,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }
        if name == "last.pt":
            state.update(
                step=step,
                model=self.model.state_dict() if self.ema is not None else None,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else None,
                rng=rng_state(),
                bad_epochs=self.bad_epochs,
                partial={"totals": self._partial[0], "seen": self._partial[1]} if step else None,
            )
        # weights as CPU tensors: a checkpoint made on a GPU loads anywhere without map_location
        # (and compares equal to a CPU model's weights); optimizer state follows its parameters
        cpu_weights = {k: v.detach().cpu() for k, v in weights.state_dict().items()}
        checkpoint = make_checkpoint(
            cpu_weights, self.info.to_dict(), train_args=self.cfg.to_dict(), train=state
        )
        save_checkpoint(self.out / "weights" / name, checkpoint)

    def _read_resume(self) -> dict[str, Any]:
        from visiontool.errors import ModelLoadError
        from visiontool.io.checkpoint import is_visiontool_checkpoint, read_checkpoint
        from visiontool.models.factory import checkpoint_info

        if Path(str(self.cfg.resume)).resolve().parent.name != "weights":
            raise ConfigError(
                f"--resume {self.cfg.resume}: expected RUN/weights/last.pt (the resumed run "
                "writes into RUN); move it back into its run folder's weights/"
            )
        checkpoint = read_checkpoint(self.cfg.resume)
        problem = (
            _recorded_problem(checkpoint)
            if is_visiontool_checkpoint(checkpoint)
            else "not a visiontool training checkpoint (last.pt)"
        )
        if problem:
            raise ModelLoadError(f"--resume {self.cfg.resume}: {problem}")
        checkpoint_info(checkpoint, Path(self.cfg.resume))  # the model_info is sound
        return checkpoint

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        from visiontool.engine.train.state import set_rng_state
        from visiontool.errors import ModelLoadError

        state = checkpoint["train"]
        try:
            self.model.load_state_dict(state.get("model") or checkpoint["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
            if state.get("partial"):
                partial = state["partial"]
                self._partial = ({str(k): float(v) for k, v in partial["totals"].items()},
                                 int(partial["seen"]))  # fmt: skip
            set_rng_state(state["rng"])
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(
                f"--resume {self.cfg.resume}: its training state does not fit this run "
                f"({first}); the data set's classes or the checkpoint changed since it was "
                "written: start a new run, or fine-tune from it with --weights"
            ) from exc
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        recorded = int((checkpoint.get("train_args") or {}).get("epochs", self.cfg.epochs))
        if recorded != self.cfg.epochs:
            self.log(
                f"--epochs {self.cfg.epochs} (the run was started with {recorded}): the "
                "learning-rate schedule is stretched to the new length from here on"
            )
        if self.start_epoch >= self.cfg.epochs:
            self.log(
                f"the run in {self.cfg.resume} already trained {self.start_epoch} epochs: "
                "nothing to resume (pass --epochs N to train longer)"
            )
        else:
            self.log(f"resumed from {self.cfg.resume} at epoch {self.start_epoch + 1}")

    def _write_args(self) -> None:
        from visiontool.io.atomic import write_json

        write_json(self.out / "args.json", self.resolved_args())

    def log(self, message: str) -> None:
        if self.cb.on_log is not None and self.dist.is_main:
            self.cb.on_log(message)


class ResumableSampler:
    """Wraps a DistributedSampler; `skip` drops the first indices of the next epoch. Yields
    (epoch, index) keys, so `SeededSamples` seeds each sample's augmentation by its epoch in
    persistent worker processes too (their copy of the data set never sees `set_epoch`)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.skip = 0
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)
        self.epoch = epoch

    def __iter__(self) -> Any:
        indices = list(self.inner)
        return iter([(self.epoch, int(i)) for i in indices[self.skip :]])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _merge_resume_config(cfg: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """A resumed run continues with the arguments it was started with (its `train_args`).

    Options given with `--resume` must agree with them, except those in RESUME_MAY_CHANGE: a
    different --data, --model, --out... is a `ConfigError` naming the option and the recorded
    value, never silently ignored. --epochs may grow (train longer), not drop below the epochs
    already done."""
    recorded = dict(checkpoint.get("train_args") or {})
    saved = dict(recorded)
    if "head" not in saved:  # written before --head existed: --model named the head then
        from visiontool import registry

        model = saved.get("model")
        if saved.get("task", "detect") == "detect" and model and registry.exists("head", model):
            saved["head"], saved["model"] = model, None
    given = _given_options(cfg)
    _check_resume_options(cfg, given, recorded, saved, checkpoint)
    if "model_name" not in saved:  # written before --model-name: --name named the model
        saved["model_name"], saved["name"] = saved.get("name"), None
    saved["resume"] = cfg.resume
    saved["out"] = None
    saved["device"] = cfg.device
    for name in RESUME_MAY_CHANGE:
        if name in given or name not in saved:
            saved[name] = getattr(cfg, name)
    known = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in saved.items() if k in known and k != "given"})


def _given_options(cfg: TrainConfig) -> set[str]:
    if cfg.given is not None:  # the CLI's parameters: only those that are training options
        return set(cfg.given) & set(TrainConfig.__dataclass_fields__) - {"resume", "given"}
    from dataclasses import MISSING, fields

    names = set()
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else None
        if f.name not in ("resume", "given") and getattr(cfg, f.name) != default:
            names.add(f.name)
    return names


def _check_resume_options(
    cfg: TrainConfig,
    given: set[str],
    recorded: dict[str, Any],
    saved: dict[str, Any],
    checkpoint: dict[str, Any],
) -> None:
    resume = Path(str(cfg.resume))
    run = resume.resolve().parent.parent
    for name in sorted(given - set(RESUME_MAY_CHANGE)):
        mine = getattr(cfg, name)
        flag = "--" + name.replace("_", "-")
        if name == "out":
            if mine is None or Path(mine).resolve() == run:
                continue
            raise ConfigError(
                f"{flag} {mine} conflicts with --resume {resume}: a resumed run writes into its "
                f"own folder {run}; drop {flag}, or start a new run without --resume"
            )
        default = TrainConfig.__dataclass_fields__[name].default
        if any(_same_value(mine, values.get(name, default)) for values in (recorded, saved)):
            continue
        was = recorded.get(name, default)
        raise ConfigError(
            f"{flag} {_shown(mine)} conflicts with --resume {resume}, a run started with "
            f"{flag} {_shown(was)}: drop {flag} (a resumed run keeps its options; only "
            f"{', '.join('--' + n.replace('_', '-') for n in RESUME_MAY_CHANGE)} may change), "
            "or start a new run without --resume"
        )
    done = int((checkpoint.get("train") or {}).get("epoch", 0))
    if "epochs" in given and cfg.epochs < done:
        raise ConfigError(
            f"--epochs {cfg.epochs}: the run in {resume} has already trained {done} epochs; "
            f"pass --epochs {done} or more (more trains longer), or drop --epochs"
        )


def _same_value(mine: Any, recorded: Any) -> bool:
    if mine == recorded:
        return True
    if isinstance(mine, (list, tuple)) and isinstance(recorded, (list, tuple)):
        return list(mine) == list(recorded)
    if isinstance(mine, (str, Path)) and isinstance(recorded, (str, Path)):
        try:  # the same file or folder written another way (relative, trailing slash)
            return Path(mine).resolve() == Path(recorded).resolve()
        except (OSError, RuntimeError, ValueError):
            return False
    return False


def _shown(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)[:200]


def _recorded_problem(checkpoint: Any) -> str | None:
    """What makes a checkpoint unusable for --resume (one phrase), or None."""
    if not isinstance(checkpoint, dict):
        return "not a visiontool training checkpoint (last.pt)"
    train = checkpoint.get("train")
    if not isinstance(train, dict) or "optimizer" not in train or train.get("optimizer") is None:
        return "not a visiontool training checkpoint (last.pt; best.pt holds weights only)"
    for key in ("epoch", "step", "bad_epochs"):
        value = train.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"its training state has no valid {key!r}"
    for key, kind in (("history", list), ("rng", dict), ("scheduler", dict), ("scaler", dict),
                      ("optimizer", dict)):  # fmt: skip
        if not isinstance(train.get(key), kind):
            return f"its training state has no valid {key!r}"
    args = checkpoint.get("train_args")
    if not isinstance(args, dict) or not isinstance(args.get("data"), str):
        return "it records no training arguments (train_args with the data set)"
    fields = TrainConfig.__dataclass_fields__
    for name, value in args.items():
        if name in fields and name != "given" and not _type_ok(str(fields[name].type), value):
            return f"its recorded option {name!r} has a wrong type ({type(value).__name__})"
    return None


def _type_ok(annotation: str, value: Any) -> bool:
    for part in (p.strip() for p in annotation.split("|")):
        if part == "None" and value is None:
            return True
        if isinstance(value, bool):
            if part == "bool":
                return True
            continue
        if part == "int" and isinstance(value, int):
            return True
        if part == "float" and isinstance(value, (int, float)):
            return True
        if part in ("str", "Path") and isinstance(value, str):
            return True
        if part.startswith("list[") and isinstance(value, list):
            return True
        if part.startswith("dict[") and isinstance(value, dict):  # e.g. --arch KEY=VALUE
            return True
    return False


def _default_lr(cfg: TrainConfig) -> float:
    from visiontool.tasks.spec import get_task

    if cfg.optimizer == "adamw":
        return 1e-3
    return get_task(cfg.task).sgd_lr(cfg.batch)


def _holds_train_run(folder: Path) -> bool:
    """Evidence of an earlier train run in `folder`: an args.json with train's own keys (written
    before the first epoch), or a results.csv of epochs; so --exist-ok replaces nothing of
    another command's or a user's."""
    from visiontool.io.paths import args_record

    if "epochs" in args_record(folder):
        return True
    try:
        with (folder / "results.csv").open(encoding="utf-8") as handle:
            return handle.readline().startswith("epoch")
    except (OSError, UnicodeDecodeError):
        return False


def _named_run(name: str, *, exist_ok: bool) -> Path:
    """runs/train/NAME, or the first free NAME2, NAME3... (with exist_ok: NAME)."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ConfigError(f"--name {name!r}: a folder name under runs/train (no '/'); use --out")
    base = Path("runs") / "train" / name
    index = 1
    while not exist_ok:  # prepare_out creates it (and removes it again if the run fails)
        candidate = base if index == 1 else base.with_name(f"{name}{index}")
        if not candidate.exists():
            return candidate
        index += 1
    return base


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"
