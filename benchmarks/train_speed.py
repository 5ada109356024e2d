"""Training throughput: our trainer against a minimal reference loop, same model/data/batch.

The reference is the torchvision detection-reference style: a plain DataLoader, fp32, SGD, no
aspect-ratio grouping, no validation. Ours is `run_train` for one epoch (its results.csv
images/s covers the training loop only, like the reference's timing). Both run in this process,
interleaved, best of --repeat.

    python benchmarks/train_speed.py [--n 64] [--batch 4] [--device cpu|cuda] [--amp]
        [--compile --epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import torch

from visiontool.data.collate import detection_collate
from visiontool.data.datasets import open_dataset
from visiontool.data.synth import synth_detection
from visiontool.data.transforms import build_transforms
from visiontool.engine.train.trainer import TrainConfig, run_train
from visiontool.models.compose import build_detector

MODEL = dict(head="frcnn", backbone="mobilenet_v3_small", fpn_channels=64, box_head=256,
             imgsz=256, returned_layers=[1, 2, 3, 5])  # fmt: skip


def reference(data: Path, *, batch: int, device: str, workers: int) -> float:
    """images/s of the plain loop over one epoch of the train split."""
    torch.manual_seed(0)
    dataset = open_dataset(data, split="train")
    dataset.transforms = build_transforms("none", train=True)
    model = build_detector(num_classes=len(dataset.classes) + 1, **MODEL).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=detection_collate
    )
    seen, start = 0, time.perf_counter()
    for images, targets in loader:
        images = [image.to(device) for image in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": (t["labels"] + 1).to(device)}
                   for t in targets]  # fmt: skip
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def ours(
    data: Path,
    out: Path,
    *,
    batch: int,
    device: str,
    workers: int,
    amp: bool,
    epochs: int = 1,
    compile_: bool = False,
    augment: str = "none",
    augment_on: str = "cpu",
) -> float:
    """visiontool's images/s in its last epoch (with --compile, run 2+ epochs: the first pays
    for compiling)."""
    config = TrainConfig(data=str(data), head="frcnn", backbone=MODEL["backbone"],
                         fpn_channels=64, box_head=256, imgsz=256, returned_layers=[1, 2, 3, 5],
                         epochs=epochs, batch=batch, lr=0.01, augment=augment, workers=workers,
                         device=device, amp=amp, out=out, exist_ok=True, warmup=0.0,
                         val_split="none", compile=compile_,
                         augment_on=augment_on)  # fmt: skip
    run_train(config)
    with (out / "results.csv").open() as handle:
        return float(list(csv.DictReader(handle))[-1]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="ours: images/s of the last")
    parser.add_argument("--compile", action="store_true", help="ours: train --compile")
    parser.add_argument("--augment", default="none", help="ours: train --augment (frcnn, ...)")
    parser.add_argument("--augment-on", default="cpu", help="ours: cpu (workers) or device")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "shapes"
        synth_detection(data, n=args.n, imgsz=256, fmt="coco", seed=1, val_fraction=0.1)
        refs, mine = [], []
        for i in range(args.repeat):
            refs.append(reference(data, batch=args.batch, device=args.device,
                                  workers=args.workers))  # fmt: skip
            mine.append(ours(data, Path(tmp) / f"run{i}", batch=args.batch, device=args.device,
                             workers=args.workers, amp=args.amp, epochs=args.epochs,
                             compile_=args.compile, augment=args.augment,
                             augment_on=args.augment_on))  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}, "
          f"amp {args.amp}, compile {args.compile}, epochs {args.epochs}, "
          f"augment {args.augment} on {args.augment_on}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"reference loop: {max(refs):.2f} images/s  runs {[round(r, 2) for r in refs]}")
    print(f"visiontool    : {max(mine):.2f} images/s  runs {[round(r, 2) for r in mine]}")
    print(f"ratio         : {max(mine) / max(refs):.2f}x")


if __name__ == "__main__":
    main()
