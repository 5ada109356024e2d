"""`visiontool train`: learning happens, checkpoints serve detect/eval, resume and DDP are exact,
bad flags are usage errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from visiontool.data.synth import synth_classification, synth_detection
from visiontool.engine.train.trainer import Callbacks, TrainConfig, run_train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    synth_classification(out, n=60, imgsz=32, seed=3, kind="digits")
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=10, imgsz=96, fmt="coco", seed=5)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lenet_config(data: Path, out: Path, **overrides) -> TrainConfig:
    base = dict(data=str(data), task="classify", model="lenet", epochs=2, batch=8, lr=0.05,
                workers=0, augment="none", out=out, warmup=0.0)  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def losses(out: Path) -> list[float]:
    with (out / "results.csv").open() as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_classifier_learns_and_writes_outputs(digits, tmp_path):
    out = tmp_path / "run"
    config = lenet_config(digits, out, epochs=15, optimizer="adamw", lr=0.005,
                          schedule="constant")  # fmt: skip
    summary = run_train(config)
    history = losses(out)
    assert history[-1] < 0.5 * history[0]
    assert summary.best_metric == "top1" and summary.best_value is not None
    for name in ("args.json", "results.csv", "losses.png", "metrics.png",
                 "weights/last.pt", "weights/best.pt"):  # fmt: skip
        assert (out / name).is_file(), name
    args = json.loads((out / "args.json").read_text())
    assert args["model"] == "lenet" and args["epochs"] == 15
    best = torch.load(out / "weights/best.pt", weights_only=True)
    assert best["model_info"]["classes"] == [str(d) for d in range(10)]
    assert "optimizer" not in best["train"]  # deployable weights only
    assert (out / "weights/best.pt").stat().st_size < (out / "weights/last.pt").stat().st_size


@pytest.mark.slow
def test_detector_learns_and_its_checkpoint_serves_detect_and_eval(cli, shapes, tmp_path):
    out = tmp_path / "det"
    config = TrainConfig(data=str(shapes), head="frcnn", backbone="mobilenet_v3_small",
                         epochs=3, batch=4, imgsz=96, workers=0, augment="none", out=out,
                         lr=0.02, warmup=0.0)  # fmt: skip
    run_train(config)
    history = losses(out)
    assert history[-1] < 0.5 * history[0]
    weights = out / "weights" / "best.pt"
    result = cli("detect", shapes / "images" / "val", "--weights", weights, "--conf", "0.01",
                 "--out", tmp_path / "pred", "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "pred/predictions.jsonl").read_text().splitlines()]
    labels = {d["label"] for row in rows for d in row["detections"]}
    assert labels and labels <= {"circle", "square", "triangle", "star", "cross", "ring"}
    result = cli("eval", "--weights", weights, "--data", shapes, "--out", tmp_path / "ev",
                 "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0.0 <= metrics["map50"] <= 1.0


def test_resume_after_interrupt_matches_uninterrupted(digits, tmp_path):
    torch.manual_seed(0)
    cpu = {"device": "cpu"}  # bit-exact resumes are a CPU property (CUDA atomics vary)
    straight = run_train(lenet_config(digits, tmp_path / "a", epochs=2, **cpu))
    calls = {"n": 0}

    def interrupt(info) -> None:
        calls["n"] += 1
        if calls["n"] == info.steps + 2:  # two steps into the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train(
            lenet_config(digits, tmp_path / "b", epochs=2, **cpu), Callbacks(on_step=interrupt)
        )
    last = tmp_path / "b" / "weights" / "last.pt"
    saved = torch.load(last, weights_only=True)["train"]
    assert (saved["epoch"], saved["step"]) == (1, 2)
    resumed = run_train(lenet_config(digits, None, resume=str(last), **cpu))
    assert Path(resumed.out) == tmp_path / "b"
    a = torch.load(Path(straight.last), weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_nonfinite_loss_stops_with_checkpoint(cli, digits, tmp_path):
    out = tmp_path / "nan"
    result = cli("train", "--task", "classify", "--model", "lenet", "--data", digits,
                 "--lr", "1e12", "--epochs", "2", "--workers", "0", "--augment", "none",
                 "--warmup", "0", "--out", out)  # fmt: skip
    assert result.exit_code == 1
    assert "loss became" in result.output and "last.pt" in result.output
    assert (out / "weights" / "last.pt").is_file()


def test_bad_flags_are_usage_errors(cli, shapes, digits, tmp_path):
    result = cli("train", "--data", shapes, "--head", "frcnn", "--backbone", "resnet81")
    assert result.exit_code == 2 and "resnet18" in result.output
    result = cli("train", "--data", shapes, "--model", "frcnm")
    assert result.exit_code == 2 and "did you mean 'frcnn'" in result.output
    result = cli("train", "--data", shapes, "--head", "frcnm")
    assert result.exit_code == 2 and "unknown head 'frcnm'" in result.output
    # a model name means the same model everywhere: parts compose only under --head
    result = cli("train", "--data", shapes, "--model", "frcnn", "--backbone", "resnet18")
    assert result.exit_code == 2 and "use --head frcnn --backbone" in result.output
    result = cli("train", "--data", shapes, "--model", "frcnn", "--head", "frcnn")
    assert result.exit_code == 2 and "not both" in result.output
    result = cli("train", "--data", shapes, "--head", "retinanet", "--no-fpn")
    assert result.exit_code == 2 and "needs an FPN" in result.output
    result = cli("train", "--data", shapes, "--head", "ssdlite", "--backbone", "vgg16")
    assert result.exit_code == 2 and "does not work with backbone 'vgg16'" in result.output
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [],
                                 "categories": [{"id": 1, "name": "a"}]}))  # fmt: skip
    result = cli("train", "--head", "frcnn", "--data", empty)
    assert result.exit_code == 2 and "no images" in result.output
    result = cli("train", "--data", tmp_path / "missing", "--model", "frcnn")
    assert result.exit_code == 2
    result = cli("train", "--task", "classify", "--model", "frcnn", "--data", digits)
    assert result.exit_code == 2 and "not a classifier" in result.output


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_double_batch(digits, tmp_path):
    common = ["--task", "classify", "--model", "lenet", "--data", str(digits), "--epochs", "1",
              "--lr", "0.05", "--workers", "0", "--augment", "none", "--warmup", "0",
              "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "visiontool", "train", *common, "--batch", "8",
                    "--out", str(single)], check=True, env=env, cwd=REPO,
                   capture_output=True)  # fmt: skip
    ddp = tmp_path / "ddp"
    for attempt in range(2):
        out = ddp if attempt == 0 else tmp_path / "ddp-retry"
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                              f"--master_port={free_port()}", "-m", "visiontool", "train", *common,
                              "--batch", "4", "--out", str(out)], env=env, cwd=REPO,
                             capture_output=True, text=True)  # fmt: skip
        # Known intermittent fault (1 run in ~10 under the full suite, not reproduced alone):
        # a rank aborts in C++ ("terminate called without an active exception", SIGABRT)
        # during validation. Retried once so CI is not hostage to it; any other failure, or
        # the abort twice, fails the test with every rank's error lines.
        if run.returncode == 0 or "exitcode: -6" not in run.stderr:
            break
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert run.returncode == 0, "\n".join(errors[-20:]) + run.stdout[-1500:]
    ddp = out
    a = torch.load(single / "weights/last.pt", weights_only=True)["state_dict"]
    b = torch.load(ddp / "weights/last.pt", weights_only=True)["state_dict"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert run.stdout.count("results saved to") == 1  # rank 0 alone logs
    # rank 0 refuses the used --out: every process says why in one line, none dumps gloo
    # (torchrun may then stop rank 1 with SIGTERM while it exits: its own doing, not ours)
    refused = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                              f"--master_port={free_port()}", "-m", "visiontool", "train", *common,
                              "--batch", "4", "--out", str(out)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.count(f"error: --out {out} already exists") == 2, refused.stderr[-3000:]
    assert "[rank1]" not in refused.stderr and "Connection closed" not in refused.stderr


def test_finetune_from_checkpoint_replaces_class_layer_and_boosts_its_lr(digits, tmp_path):
    import torch as _torch

    from visiontool.distributed import DistInfo
    from visiontool.engine.train.trainer import Trainer

    run_train(lenet_config(digits, tmp_path / "base", epochs=1))
    shapes = tmp_path / "shapes_cls"
    synth_classification(shapes, n=30, imgsz=32, seed=4, kind="shapes")
    config = lenet_config(shapes, tmp_path / "ft", weights=str(tmp_path / "base/weights/best.pt"),
                          head_lr_mult=10.0, lr=0.01)  # fmt: skip
    trainer = Trainer(config, _torch.device("cpu"), DistInfo(), Callbacks())
    base = _torch.load(tmp_path / "base/weights/best.pt", weights_only=True)["state_dict"]
    state = trainer.model.state_dict()
    assert _torch.equal(state["features.c1.weight"], base["features.c1.weight"])
    assert state["classifier.output.weight"].shape[0] == len(trainer.info.classes) != 10
    fast = [g for g in trainer.optimizer.param_groups if abs(g["lr"] - 0.1) < 1e-12]
    fast_params = {id(p) for g in fast for p in g["params"]}
    assert id(trainer.model.classifier.output.weight) in fast_params
    assert id(trainer.model.features.c1.weight) not in fast_params


def test_anchors_fit_output_configures_training(cli, shapes, tmp_path):
    assert cli("anchors", "fit", "--data", shapes, "--num", "5", "--imgsz", "96",
               "--out", tmp_path / "fit").exit_code == 0  # fmt: skip
    anchors = tmp_path / "fit" / "anchors.json"
    fitted = json.loads(anchors.read_text())
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, "--head", "frcnn", "--backbone",
                 "mobilenet_v3_small", "--returned-layers", "1", "--returned-layers", "2",
                 "--returned-layers", "3", "--returned-layers", "5", "--anchors", anchors,
                 "--imgsz", "96", "--epochs", "1", "--workers", "0", "--fpn-channels", "32",
                 "--box-head", "64", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    build = torch.load(out / "weights/best.pt", weights_only=True)["model_info"]["build"]
    assert build["anchor_fit"]["wh"] == fitted["wh"] and build["anchor_fit"]["scale"] == 1.0
    from visiontool.models.factory import load_model

    # 5 fitted anchors over 4 maps + the pool level: one fitted shape per level, exactly
    generator = load_model(weights=out / "weights/best.pt").module.rpn.anchor_generator
    flat = [x for level in fitted["sizes"] for x in level]
    assert [s for level in generator.sizes for s in level] == pytest.approx(flat, abs=1e-3)
    # the file's ratios are width / height; torchvision's aspect_ratios height / width
    flat = [1 / x for level in fitted["ratios"] for x in level]
    assert [r for level in generator.aspect_ratios for r in level] == pytest.approx(flat, abs=1e-3)


def test_trained_detector_keeps_the_data_sets_coco_category_ids(cli, shapes, tmp_path):
    import shutil

    data = tmp_path / "coco"
    shutil.copytree(shapes, data)
    for path in (data / "annotations").glob("*.json"):
        gt = json.loads(path.read_text())
        for item in (*gt["categories"], *gt["annotations"]):
            key = "id" if "name" in item else "category_id"
            item[key] += 10
        path.write_text(json.dumps(gt))
    out = tmp_path / "run"
    result = cli("train", "--data", data, "--head", "frcnn", "--backbone", "mobilenet_v3_small",
                 "--imgsz", "96", "--epochs", "1", "--workers", "0", "--fpn-channels", "32",
                 "--box-head", "64", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    info = torch.load(out / "weights/best.pt", weights_only=True)["model_info"]
    assert info["category_ids"] == list(range(11, 17))
    pred = tmp_path / "pred"
    result = cli("detect", data / "images" / "val", "--weights", out / "weights/best.pt",
                 "--conf", "0", "--save-coco", "--workers", "0", "--out", pred)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((pred / "coco_results.json").read_text())
    assert rows and {row["category_id"] for row in rows} <= set(range(11, 17))


def test_resuming_a_run_started_before_head_existed_keeps_its_head():
    """`last.pt` files written when `--model frcnn` named a head resume as `--head frcnn`."""
    from visiontool.engine.train.trainer import _merge_resume_config

    old = {"train_args": {"data": "d", "task": "detect", "model": "frcnn", "backbone": "resnet18"}}
    merged = _merge_resume_config(TrainConfig(data="d", resume="last.pt"), old)
    assert (merged.model, merged.head, merged.backbone) == (None, "frcnn", "resnet18")
    new = {"train_args": {"data": "d", "task": "detect", "model": "frcnn", "head": None}}
    merged = _merge_resume_config(TrainConfig(data="d", resume="last.pt"), new)
    assert (merged.model, merged.head) == ("frcnn", None)


def test_cpu_amp_is_bf16_for_training_only_and_only_with_native_bf16(monkeypatch):
    from visiontool import runtime

    cpu = torch.device("cpu")
    assert runtime.autocast_dtype(cpu) is None  # inference (--half): never on CPU
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.autocast_dtype(cpu, training=True) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.autocast_dtype(cpu, training=True) is None


def test_cuda_half_is_fp16_and_amp_prefers_bf16(monkeypatch):
    """Issue #16: --half (inference) is fp16 on CUDA, whatever the GPU (bf16 cost 1.6 mAP
    points on an H200); --amp (training) takes bf16 where the GPU has it, else fp16."""
    from visiontool import runtime

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert runtime.autocast_dtype(cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))  # H100/H200
    assert runtime.autocast_dtype(cuda, training=True) is torch.bfloat16
    assert runtime.autocast_dtype(cuda) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # T4
    assert runtime.autocast_dtype(cuda, training=True) is torch.float16  # bf16 only emulated


def test_compile_targets_a_detectors_backbone_and_keeps_state_keys():
    from torch import nn

    from visiontool.engine.train.setup import compile_network, uncompiled

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

    detector = Detector()
    keys = list(detector.state_dict())
    assert compile_network(detector) == "the backbone"
    assert detector.backbone._compiled_call_impl is not None
    assert detector._compiled_call_impl is None  # the head's data-dependent work stays eager
    compiled = detector.backbone._compiled_call_impl
    with uncompiled(detector):  # validation: two threads in the model, so run it eagerly
        assert all(m._compiled_call_impl is None for m in detector.modules())
    assert detector.backbone._compiled_call_impl is compiled
    assert list(detector.state_dict()) == keys  # checkpoints unchanged
    plain = nn.Sequential(nn.Linear(2, 2))
    assert compile_network(plain) == "the model" and plain._compiled_call_impl is not None


@pytest.mark.slow
def test_train_with_compile_writes_a_plain_checkpoint(digits, tmp_path):
    from visiontool.engine.train.trainer import TrainConfig, run_train

    config = TrainConfig(task="classify", model="lenet", data=str(digits), epochs=1, batch=16,
                         workers=0, compile=True, out=tmp_path / "c")  # fmt: skip
    summary = run_train(config)
    state = torch.load(summary.last, weights_only=True)["state_dict"]
    assert state and not any("_orig_mod" in key for key in state)


def test_channels_last_trains_to_the_same_weights(digits, tmp_path):
    """--channels-last changes the memory layout, not the function: one epoch of LeNet lands
    on the same weights (to float rounding)."""
    from visiontool.engine.train.trainer import TrainConfig, run_train

    runs = {}
    for flag in (False, True):
        config = TrainConfig(task="classify", model="lenet", data=str(digits), epochs=1,
                             batch=16, workers=0, channels_last=flag, device="cpu",
                             out=tmp_path / str(flag))  # fmt: skip
        runs[flag] = torch.load(run_train(config).last, weights_only=True)["state_dict"]
    for key, value in runs[False].items():
        assert torch.allclose(value.float(), runs[True][key].float(), atol=1e-4), key


@pytest.mark.parametrize("kind", ["detect", "classify"])
def test_augmenting_on_the_device_draws_what_the_workers_draw(shapes, digits, tmp_path, kind):
    """--augment-on device: the workers only decode; the same random flips, crops and
    colour changes happen in the main process under the same per-sample seeds. On a CPU
    training lands on bit-identical weights (tests/test_gpu.py checks the CUDA side)."""
    if kind == "detect":
        base = dict(data=str(shapes), model="tinyssd", imgsz=96, augment="ssd", batch=4)
    else:
        base = dict(data=str(digits), task="classify", model="lenet", augment="classify",
                    batch=8)  # fmt: skip
    weights = {}
    for where in ("cpu", "device"):
        config = TrainConfig(**base, epochs=2, workers=1, lr=0.01, warmup=0.0, seed=4,
                             augment_on=where, out=tmp_path / where,
                             device="cpu")  # fmt: skip
        weights[where] = torch.load(run_train(config).last, weights_only=True)["state_dict"]
    for key, value in weights["cpu"].items():
        assert torch.equal(value, weights["device"][key]), key


def test_augment_on_is_checked(digits, tmp_path):
    from visiontool.errors import ConfigError

    with pytest.raises(ConfigError, match="--augment-on must be cpu or device"):
        run_train(lenet_config(digits, tmp_path / "o", augment_on="gpu"))
    assert not (tmp_path / "o").exists()
