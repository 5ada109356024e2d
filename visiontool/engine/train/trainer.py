"""The training engine: one loop for detectors and classifiers, on CPU, one GPU or many (DDP).

`run_train(config)` builds the model and data, then runs epochs of
forward -> loss -> backward -> (accumulate) -> clip -> step -> schedule -> EMA, validates every
`val_every` epochs, writes `weights/last.pt` and `weights/best.pt`, `results.csv` and plots, and
stops early after `patience` epochs without improvement. `resume` restores the model, optimizer,
scheduler, scaler, EMA, position (epoch and step) and random states, so an interrupted run ends
with the same weights as an uninterrupted one (CPU, workers=0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visiontool.engine.train.distributed import DistInfo
from visiontool.errors import ConfigError, VisiontoolError


class TrainingDiverged(VisiontoolError):
    """The loss became NaN or infinite; the last good state was saved."""

    exit_code = 1


@dataclass
class TrainConfig:
    data: str
    task: str = "detect"
    model: str | None = None  # a registry model (`visiontool models`); None: see `head`
    head: str | None = None  # compose a detector: this head over `backbone` (default frcnn)
    backbone: str | None = None
    fpn: bool | None = None
    trainable_layers: int | None = None
    backbone_weights: str | None = None
    weights: str | None = None
    fpn_channels: int = 256
    box_head: int = 1024
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
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out) if self.out else None
        return data


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


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_log: Callable[[str], None] | None = None


def run_train(config: TrainConfig, callbacks: Callbacks | None = None) -> TrainSummary:
    """Train as configured; see the module docstring."""
    from visiontool.engine.train.distributed import cleanup, init_distributed, local_device
    from visiontool.runtime import resolve_device

    _validate(config)
    device = resolve_device(config.device)
    dist = init_distributed(device)
    try:
        trainer = Trainer(config, local_device(device, dist), dist, callbacks or Callbacks())
        return trainer.fit()
    finally:
        cleanup(dist)


def _validate(config: TrainConfig) -> None:
    if config.task not in ("detect", "classify"):
        raise ConfigError(f"--task must be detect or classify, got {config.task!r}")
    for name in ("epochs", "batch", "accumulate", "val_every"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if config.lr is not None and config.lr <= 0:
        raise ConfigError("--lr must be > 0")


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
        self._build()

    # --- setup -----------------------------------------------------------------------------

    def _build(self) -> None:
        import torch

        from visiontool.engine.train import setup
        from visiontool.engine.train.optim import build_optimizer, build_scheduler, ema_model
        from visiontool.models.finetune import param_groups
        from visiontool.runtime import autocast_dtype

        cfg = self.cfg
        self.train_set, self.val_set = setup.open_training_data(cfg)
        build_model = (
            setup.build_detector_for_training
            if cfg.task == "detect"
            else setup.build_classifier_for_training
        )
        module, self.info, new_params = build_model(cfg, self.train_set)
        self.augment = setup.attach_transforms(cfg, self.train_set, self.val_set, self.info)
        module.to(self.device)
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
        self.amp_dtype = autocast_dtype(self.device) if cfg.amp else None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.ema = ema_model(module, cfg.ema_decay) if cfg.ema else None
        self.ddp = self._wrap_ddp(module)
        self.metric = cfg.metric or ("map50" if cfg.task == "detect" else "top1")
        self.out = self._output_dir()
        self.start_epoch, self.start_step = 0, 0
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self._step_in_epoch = 0
        self._partial: tuple[dict[str, float], int] = ({}, 0)
        if self.resume_state is not None:
            self._restore(self.resume_state)

    def _train_loader(self) -> tuple[Any, Any]:
        from torch.utils.data import DataLoader, DistributedSampler

        from visiontool.data.collate import detection_collate

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
        loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch,
            sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=detection_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
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
        """Rank 0 picks (and creates) the folder; `fit` broadcasts it to the other ranks."""
        from visiontool.io.paths import run_dir

        if self.cfg.resume:
            return Path(self.cfg.resume).resolve().parent.parent
        if not self.dist.is_main:
            return Path(self.cfg.out or "runs/train/exp")
        out = run_dir(self.cfg.out, "train", exist_ok=self.cfg.exist_ok)
        out.mkdir(parents=True, exist_ok=True)
        return out

    # --- the loop --------------------------------------------------------------------------

    def fit(self) -> TrainSummary:
        from visiontool.engine.train.distributed import broadcast_object

        self.out = Path(broadcast_object(str(self.out), self.dist))
        if self.dist.is_main:
            self._write_args()
        self.log(
            f"training {self.info.name} on {len(self.train_set)} images "
            f"({len(self.info.classes)} classes), {self.cfg.epochs} epochs, "
            f"batch {self.cfg.batch} x {self.dist.world_size} process(es), device {self.device}"
        )
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
            self._save("last.pt", epoch=epoch, step=self._step_in_epoch)
            raise
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
        )

    def _epoch(self, epoch: int) -> dict[str, Any]:
        from visiontool.runtime import seed_everything

        cfg = self.cfg
        skip = self.start_step if epoch == self.start_epoch else 0
        if skip == 0 or self.resume_state is None:
            seed_everything(cfg.seed + 1000 * epoch + self.dist.rank)
        self.resume_state = None
        self.sampler.set_epoch(epoch)
        # Resuming mid-epoch: the same shuffled order, minus the batches already trained on.
        self.sampler.skip = skip * cfg.accumulate * cfg.batch
        self.loader.generator.manual_seed(cfg.seed + epoch)
        self.ddp.train()
        started = time.perf_counter()
        totals, seen = self._partial if skip else ({}, 0)  # a resumed epoch's running sums
        self._partial = (totals, seen)
        self._step_in_epoch = skip
        n_micro = len(self.loader)
        for micro, (images, targets) in enumerate(self.loader, start=1):
            losses = self._forward(images, targets)
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                self._save("last.pt", epoch=epoch, step=self._step_in_epoch)
                raise TrainingDiverged(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step "
                    f"{self._step_in_epoch + 1}; last good state saved to "
                    f"{self.out / 'weights' / 'last.pt'} (try a lower --lr or --clip-grad)"
                )
            self.scaler.scale(loss / cfg.accumulate).backward()
            seen += len(images)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(images)
            self._partial = (totals, seen)
            if micro % cfg.accumulate == 0 or micro == n_micro:
                self._optimizer_step()
                self._step_in_epoch += 1
                self._report_step(epoch, float(loss.detach()), seen, started)
        elapsed = time.perf_counter() - started
        row = {"epoch": epoch + 1}
        row.update({k: v / max(1, seen) for k, v in totals.items()})
        row["loss"] = sum(v for v in totals.values()) / max(1, seen)
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["time_s"] = round(elapsed, 3)
        row["images_per_s"] = round(seen * self.dist.world_size / max(elapsed, 1e-9), 3)
        if self.val_set is not None and ((epoch + 1) % cfg.val_every == 0 or
                                         epoch + 1 == cfg.epochs):  # fmt: skip
            row.update(self._validate())
        self.history.append(row)
        self._end_epoch(row, epoch)
        return row

    def _forward(self, images: list[Any], targets: list[Any]) -> dict[str, Any]:
        import torch

        from visiontool.engine.predict.predictor import normalize_for_model
        from visiontool.runtime import autocast

        images = [image.to(self.device, non_blocking=True) for image in images]
        with autocast(self.device, self.amp_dtype):
            if self.cfg.task == "classify":
                batch = normalize_for_model(torch.stack(images), self.info.preprocess)
                logits = self.ddp(batch)
                logits = logits[0] if isinstance(logits, tuple) else logits
                labels = torch.as_tensor([int(t) for t in targets], device=self.device)
                return {"cls_loss": torch.nn.functional.cross_entropy(logits.float(), labels)}
            prepared = [_to_model_target(t, self.device) for t in targets]
            return self.ddp(images, prepared)

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

    def _report_step(self, epoch: int, loss: float, seen: int, started: float) -> None:
        rate = seen * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
        info = StepInfo(
            epoch=epoch + 1,
            epochs=self.cfg.epochs,
            step=self._step_in_epoch,
            steps=self.steps_per_epoch,
            loss=loss,
            lr=self.optimizer.param_groups[0]["lr"],
            images_per_s=rate,
        )
        if self.cb.on_step is not None and self.dist.is_main:
            self.cb.on_step(info)

    def _validate(self) -> dict[str, float]:
        from visiontool.engine.train.validate import validate_classifier, validate_detector

        module = self.ema.module if self.ema is not None else self.model
        validate = validate_detector if self.cfg.task == "detect" else validate_classifier
        metrics = validate(
            module,
            self.val_set,
            info=self.info,
            device=self.device,
            batch=self.cfg.batch,
            workers=self.cfg.workers,
            dist=self.dist,
        )
        return {f"val/{k}": v for k, v in metrics.items()}

    def _end_epoch(self, row: dict[str, Any], epoch: int) -> None:
        value = row.get(f"val/{self.metric}")
        if self.val_set is not None and f"val/{self.metric}" not in row and \
                epoch + 1 == self.cfg.epochs:  # fmt: skip
            raise ConfigError(
                f"--metric {self.metric!r} is not a validation metric "
                f"(have: {', '.join(k[4:] for k in row if k.startswith('val/'))})"
            )
        improved = value is not None and (self.best_value is None or value > self.best_value)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch + 1, 0
        elif value is not None:
            self.bad_epochs += 1
        if self.dist.is_main:
            from visiontool.engine.train.log import append_results, plot_results

            self._save("last.pt", epoch=epoch + 1, step=0)
            if improved or (self.val_set is None):
                self._save("best.pt", epoch=epoch + 1, step=0)
            append_results(self.out / "results.csv", row)
            plot_results(self.out / "results.csv", self.out)
        if self.cb.on_epoch is not None and self.dist.is_main:
            self.cb.on_epoch(row)

    def _should_stop(self, row: dict[str, Any], epoch: int) -> bool:
        patience = self.cfg.patience
        if patience and self.bad_epochs >= patience and epoch + 1 < self.cfg.epochs:
            self.log(f"early stop: no {self.metric} improvement in {patience} validations")
            return True
        return False

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
        checkpoint = make_checkpoint(
            weights.state_dict(), self.info.to_dict(), train_args=self.cfg.to_dict(), train=state
        )
        save_checkpoint(self.out / "weights" / name, checkpoint)

    def _read_resume(self) -> dict[str, Any]:
        from visiontool.errors import ModelLoadError
        from visiontool.io.checkpoint import is_visiontool_checkpoint, read_checkpoint

        checkpoint = read_checkpoint(self.cfg.resume)
        if not is_visiontool_checkpoint(checkpoint) or "optimizer" not in checkpoint.get(
            "train", {}
        ):
            raise ModelLoadError(
                f"--resume {self.cfg.resume}: not a visiontool training checkpoint (last.pt)"
            )
        return checkpoint

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        from visiontool.engine.train.state import set_rng_state

        state = checkpoint["train"]
        self.model.load_state_dict(state["model"] or checkpoint["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        if state.get("partial"):
            self._partial = (dict(state["partial"]["totals"]), int(state["partial"]["seen"]))
        set_rng_state(state["rng"])
        self.log(f"resumed from {self.cfg.resume} at epoch {self.start_epoch + 1}")

    def _write_args(self) -> None:
        from visiontool.io.atomic import write_json

        write_json(self.out / "args.json", self.cfg.to_dict())

    def log(self, message: str) -> None:
        if self.cb.on_log is not None and self.dist.is_main:
            self.cb.on_log(message)


class ResumableSampler:
    """Wraps a DistributedSampler; `skip` drops the first indices of the next epoch."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Any:
        indices = list(self.inner)
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _merge_resume_config(cfg: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """A resumed run continues with the arguments it was started with."""
    saved = dict(checkpoint.get("train_args") or {})
    saved["resume"] = cfg.resume
    saved["out"] = None
    saved["device"] = cfg.device
    saved["workers"] = cfg.workers
    if "head" not in saved:  # written before --head existed: --model named the head then
        from visiontool import registry

        model = saved.get("model")
        if saved.get("task", "detect") == "detect" and model and registry.exists("head", model):
            saved["head"], saved["model"] = model, None
    known = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


def _to_model_target(target: dict[str, Any], device: Any) -> dict[str, Any]:
    """Our 0-based labels -> torchvision's (background = 0), plain tensors on the device."""
    import torch

    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(target["labels"], dtype=torch.int64) + 1
    return {"boxes": boxes.to(device), "labels": labels.to(device)}


def _default_lr(cfg: TrainConfig) -> float:
    if cfg.optimizer == "adamw":
        return 1e-3
    return 0.02 * cfg.batch / 16 if cfg.task == "detect" else 0.01
