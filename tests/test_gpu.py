"""The paths that run only on a GPU (issue 16): fp16 inference (`--half`), AMP and channels-last
training, pinned loader memory, augmentation on the device, DDP over NCCL.

Skipped without CUDA; `benchmarks/gpu_check.sh` runs them on a GPU machine. The CPU suite pins
its bit-exact tests (resume, channels-last, --augment-on) to the CPU; these are their CUDA side,
with the tolerances CUDA kernels allow. `VISIONTOOL_TEST_GPU_DEVICE=cpu` runs this file's code
on a CPU (the CUDA-only assertions left out), to try it where no GPU is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train import free_port
from visiontool.data.synth import synth_classification, synth_detection
from visiontool.distributed import DistInfo
from visiontool.engine.train.trainer import Callbacks, TrainConfig, Trainer, run_train

DEVICE = os.environ.get("VISIONTOOL_TEST_GPU_DEVICE", "cuda")
ON_CUDA = DEVICE.startswith("cuda")
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(), reason="needs a GPU (CUDA)"
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=16, imgsz=256, fmt="coco", seed=202)
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    synth_classification(out, n=60, imgsz=32, seed=3, kind="digits")
    return out


def _box_iou(a: list[float], b: list[float]) -> float:
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def _detections(out: Path) -> dict[str, list[dict]]:
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return {Path(row["image"]).name: row["detections"] for row in map(json.loads, lines)}


def test_half_is_fp16_and_finds_what_fp32_finds(cli, shapes, tmp_path):
    """--half on CUDA: fp16 autocast (bf16 would cost box accuracy), and every confident fp32
    box has a same-class fp16 box over it."""
    from visiontool.engine.predict.predictor import Predictor
    from visiontool.models.factory import load_model

    predictor = Predictor(load_model("shapes-tinyssd", device=DEVICE), half=True)
    if ON_CUDA:
        assert predictor.autocast_dtype is torch.float16
    found = {}
    for mode, flag in (("fp32", []), ("half", ["--half"])):
        out = tmp_path / mode
        result = cli("detect", shapes / "images", "-r", "--model", "shapes-tinyssd", "--device",
                     DEVICE, *flag, "--out", out, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.output
        found[mode] = _detections(out)
    assert found["fp32"].keys() == found["half"].keys()
    confident = 0
    for name, boxes in found["fp32"].items():
        for box in (d for d in boxes if d["score"] >= 0.5):
            confident += 1
            ious = [_box_iou(box["box"], d["box"]) for d in found["half"][name]
                    if d["class_id"] == box["class_id"]]  # fmt: skip
            assert ious and max(ious) >= 0.9, (name, box)
    assert confident >= 16  # the shipped model finds the shapes: the comparison means something


def test_amp_channels_last_training_writes_a_float32_checkpoint_the_cpu_loads(
    cli, shapes, tmp_path
):
    """AMP (bf16 where the GPU has it) with channels-last and loader workers: the loss stays
    finite, and the checkpoint holds plain float32 weights that `detect` runs on a CPU."""
    config = TrainConfig(data=str(shapes), model="tinyssd", imgsz=96, epochs=1, batch=4,
                         workers=2, amp=True, channels_last=True, device=DEVICE,
                         out=tmp_path / "run")  # fmt: skip
    summary = run_train(config)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in summary.history)
    state = torch.load(summary.last, weights_only=True)["state_dict"]
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 and v.device.type == "cpu" for v in floats)
    result = cli("detect", shapes / "images" / "val", "--weights", summary.last, "--device",
                 "cpu", "--out", tmp_path / "det", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output


def test_the_loader_pins_memory_and_keeps_its_workers_on_cuda(digits, tmp_path):
    config = TrainConfig(data=str(digits), task="classify", model="lenet", epochs=1, batch=8,
                         workers=1, device=DEVICE, out=tmp_path / "run")  # fmt: skip
    trainer = Trainer(config, torch.device(DEVICE), DistInfo(), Callbacks())
    try:
        assert next(trainer.model.parameters()).device.type == torch.device(DEVICE).type
        assert trainer.loader.pin_memory is ON_CUDA and trainer.loader.persistent_workers
        images, _targets, *_ = next(iter(trainer.loader))
        assert all(image.is_pinned() is ON_CUDA for image in images)
    finally:
        trainer.release_out(failed=True)


def _augmented_first_batch(shapes: Path, device: str, out: Path) -> list[tuple]:
    """The first training batch as `--augment-on device` makes it on `device`."""
    config = TrainConfig(data=str(shapes), model="tinyssd", imgsz=96, augment="ssd", batch=4,
                         workers=0, seed=4, augment_on="device", device=device,
                         out=out)  # fmt: skip
    trainer = Trainer(config, torch.device(device), DistInfo(), Callbacks())
    try:
        images, targets, *keys = next(iter(trainer.loader))
        images, targets = trainer.device_augment(images, targets, keys[0])
        return [(i.cpu(), {k: v.cpu() for k, v in t.items() if hasattr(v, "cpu")})
                for i, t in zip(images, targets, strict=True)]  # fmt: skip
    finally:
        trainer.release_out(failed=True)


def test_augmenting_on_cuda_draws_what_the_cpu_draws(shapes, tmp_path):
    """The same per-sample seeds give the same flips and crops on the GPU as on the CPU; only
    the interpolation kernels' rounding differs."""
    on_cpu = _augmented_first_batch(shapes, "cpu", tmp_path / "cpu")
    on_device = _augmented_first_batch(shapes, DEVICE, tmp_path / "device")
    for (image_a, target_a), (image_b, target_b) in zip(on_cpu, on_device, strict=True):
        assert image_a.shape == image_b.shape and image_a.dtype == image_b.dtype
        scale = 255.0 if image_a.dtype == torch.uint8 else 1.0
        assert (image_a.float() - image_b.float()).abs().mean() / scale < 2 / 255
        assert torch.equal(target_a["labels"], target_b["labels"])
        assert torch.allclose(target_a["boxes"].float(), target_b["boxes"].float(), atol=0.5)


@pytest.mark.skipif(
    not ON_CUDA or torch.cuda.device_count() < 2, reason="needs 2 GPUs (DDP over NCCL)"
)
def test_torchrun_trains_over_two_gpus_with_nccl(digits, tmp_path):
    out = tmp_path / "ddp"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "visiontool", "train", "--task",
                          "classify", "--model", "lenet", "--data", str(digits), "--epochs", "1",
                          "--batch", "8", "--amp", "--device", "cuda", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("results saved to") == 1
    assert "2 processes" in run.stdout, run.stdout[-2000:]
    assert torch.load(out / "weights" / "last.pt", weights_only=True)["state_dict"]
