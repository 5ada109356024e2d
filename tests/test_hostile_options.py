"""Hostile option values for `train` and `eval`: each is one `error:` line and exit 2, found
before the output folder is made; nothing is silently wrong.

- A registry detector (`train --model frcnn-mobile-320`) trains without --backbone-weights:
  only options the user gave count as composing ones.
- Every float option of train is finite and in its range (NaN once reached args.json, a
  negative --clip-grad turned training into gradient ascent); --imgsz >= 32 as in detect.
- eval's --batch, --workers, --imgsz are checked; images the model fails on are reported
  (exit 1), and a partial predictions.jsonl is a warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_hostile_training import one_error_line
from visiontool.data.synth import synth_detection
from visiontool.errors import ConfigError

FAST = ["--epochs", "1", "--batch", "2", "--workers", "0", "--device", "cpu", "--imgsz", "64"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Five 64 px images: four to train on, one to validate."""
    out = tmp_path_factory.mktemp("shapes")
    synth_detection(out, n=5, imgsz=64, fmt="coco", seed=1)
    return out


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory) -> Path:
    """Twelve 128 px images (a few in val) for eval."""
    out = tmp_path_factory.mktemp("shapes-val")
    synth_detection(out, n=12, imgsz=128, fmt="coco", seed=2)
    return out


# --- 1: a registry detector needs no --backbone-weights ---------------------------------------


def test_registry_detector_trains_without_backbone_weights(cli, shapes, tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, "--model", "frcnn-mobile-320", "--weights", "none",
                 *FAST, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--backbone-weights" not in result.output
    assert (out / "weights" / "last.pt").is_file()
    args = json.loads((out / "args.json").read_text())
    assert args["backbone_weights"] == "none"


@pytest.mark.parametrize("model", ["frcnn-mobile-320", "ssdlite", "retinanet", "fcos"])
@pytest.mark.parametrize("backbone_weights", [None, "none"])
def test_no_registry_detector_sees_composing_options_it_was_not_given(model, backbone_weights):
    from visiontool.engine.train.setup import check_model_options
    from visiontool.engine.train.trainer import TrainConfig

    check_model_options(TrainConfig(data="d", model=model, backbone_weights=backbone_weights))


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--backbone-weights", "DEFAULT"], "--backbone-weights"),
        (["--no-fpn"], "--no-fpn"),
        (["--trainable-layers", "0"], "--trainable-layers"),
    ],
)
def test_composing_options_a_registry_detector_cannot_honour_are_refused_up_front(
    cli, shapes, tmp_path, extra, flag
):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, "--model", "ssdlite", *extra, *FAST, "--out", out)
    one_error_line(result, 2, flag, "registry model 'ssdlite'")
    assert not out.exists()


def test_train_help_example_still_parses():
    """The README's and --help's fine-tuning example passes the option check (offline: the
    check runs before any weights are fetched)."""
    from visiontool.cli.train import HELP
    from visiontool.engine.train.setup import check_model_options
    from visiontool.engine.train.trainer import TrainConfig

    assert "frcnn-mobile-320 --weights DEFAULT" in HELP
    check_model_options(TrainConfig(data="d", model="frcnn-mobile-320", weights="DEFAULT",
                                    head_lr_mult=10.0, freeze=2))  # fmt: skip


# --- 2-6: train's numbers ------------------------------------------------------------------------

BAD_TRAIN = [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-0.1"),
    ("--clip-grad", "-1"), ("--clip-grad", "nan"), ("--clip-grad", "inf"),
    ("--weight-decay", "nan"), ("--weight-decay", "-1"), ("--weight-decay", "inf"),
    ("--head-lr-mult", "nan"), ("--head-lr-mult", "0"), ("--head-lr-mult", "-inf"),
    ("--warmup", "nan"), ("--warmup", "-1"), ("--warmup", "inf"),
    ("--imgsz", "31"), ("--imgsz", "0"), ("--imgsz", "-64"),
    ("--workers", "-1"), ("--patience", "-1"), ("--freeze", "-1"), ("--trainable-layers", "-1"),
    ("--fpn-channels", "0"), ("--box-head", "0"), ("--log-every", "0"),
    # extremes that overflowed deep inside (second sweep): 100,000 loader processes wrapped the
    # PID table; 1e308 overflowed SGD; huge seeds/batches overflowed C longs; imgsz ran out
    ("--workers", "100000"), ("--lr", "1e308"), ("--weight-decay", "1e300"),
    ("--seed", "99999999999999999999"), ("--seed", "-1"), ("--batch", "99999999999999999999"),
    ("--imgsz", "100000"),
]  # fmt: skip


@pytest.mark.parametrize(("option", "value"), BAD_TRAIN, ids=[" ".join(x) for x in BAD_TRAIN])
def test_train_refuses_out_of_range_numbers_before_writing(cli, shapes, tmp_path, option, value):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, option, value, "--out", out)
    one_error_line(result, 2, option)
    assert not out.exists()


@pytest.mark.parametrize(
    ("task", "option", "value"),
    [("single", "--box-weight", "nan"), ("multilabel", "--threshold", "nan")],
)
def test_task_floats_refuse_nan(cli, shapes, tmp_path, task, option, value):
    out = tmp_path / "run"
    result = cli("train", "--data", shapes, "--task", task, option, value, "--out", out)
    one_error_line(result, 2, option)
    assert not out.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("momentum", float("nan")), ("momentum", -0.1), ("momentum", 1.0),
     ("ema_decay", float("nan")), ("ema_decay", 1.0), ("ema_decay", 0.0)],
)  # fmt: skip
def test_api_only_floats_are_checked_too(tmp_path, field, value):
    from visiontool.engine.train.trainer import TrainConfig, run_train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        run_train(TrainConfig(data=str(tmp_path), out=out, **{field: value}))
    assert not out.exists()


def test_zero_clip_grad_means_no_clipping_and_is_accepted():
    from visiontool.engine.train.trainer import TrainConfig, _validate

    _validate(TrainConfig(data="d", clip_grad=0.0, warmup=0.0, weight_decay=0.0, patience=0))
    _validate(TrainConfig(data="d", clip_grad=10.0, imgsz=32, workers=0))


# --- 6: eval's numbers ---------------------------------------------------------------------------

BAD_EVAL = [("--workers", "-1"), ("--batch", "0"), ("--batch", "-1"), ("--imgsz", "31"),
            ("--imgsz", "0"), ("--iou", "nan"), ("--conf", "nan"), ("--workers", "100000"),
            ("--batch", "99999999999999999999"), ("--imgsz", "100000")]  # fmt: skip


@pytest.mark.parametrize(("option", "value"), BAD_EVAL, ids=[" ".join(x) for x in BAD_EVAL])
def test_eval_refuses_out_of_range_numbers_before_writing(cli, shapes, tmp_path, option, value):
    out = tmp_path / "eval"
    result = cli("eval", "--data", shapes, "--model", "shapes-tinyssd", option, value,
                 "--out", out)  # fmt: skip
    one_error_line(result, 2, option)
    assert not out.exists()


# --- 7: images the model fails on ----------------------------------------------------------------


def test_eval_reports_images_the_model_failed_on(cli, shapes_val, tmp_path):
    """shapes-tinyssd cannot run at 33 px: every image fails inside the model. That is exit 1
    with how many and why, never a quiet mAP of 0."""
    result = cli("eval", "--data", shapes_val, "--model", "shapes-tinyssd", "--imgsz", "33",
                 "--device", "cpu", "--workers", "0", "--no-plots", "--no-report",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    warning = [line for line in result.output.splitlines() if "failed in the model" in line]
    n = len(_val_images(shapes_val))
    assert warning and warning[0].startswith(f"warning: {n} of {n} images failed in the model")
    assert "first: image" in warning[0]


def test_eval_of_a_working_model_has_no_failure(cli, shapes_val, tmp_path):
    result = cli("eval", "--data", shapes_val, "--model", "shapes-tinyssd", "--device", "cpu",
                 "--workers", "0", "--no-plots", "--no-report",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "failed in the model" not in result.output


# --- 8: a partial predictions.jsonl --------------------------------------------------------------


def _val_images(data: Path) -> list[Path]:
    return sorted((data / "images" / "val").iterdir())


def test_eval_warns_about_images_missing_from_a_predictions_jsonl(cli, shapes_val, tmp_path):
    images = _val_images(shapes_val)
    pred = tmp_path / "predictions.jsonl"
    line = {"image": str(images[0]), "width": 128, "height": 128, "error": None,
            "detections": [{"box": [1, 1, 20, 20], "score": 0.9, "label": "circle"}]}  # fmt: skip
    pred.write_text(json.dumps(line) + "\n")
    result = cli("eval", "--data", shapes_val, "--pred", pred, "--no-plots", "--no-report",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1, result.output
    assert f"{len(images) - 1} of {len(images)} images have no line in" in warnings[0]
    assert "detect --resume" in warnings[0]


def test_complete_predictions_jsonl_with_empty_lines_is_not_warned(cli, shapes_val, tmp_path):
    """A line with no detections is an image processed that found nothing: no warning."""
    pred = tmp_path / "predictions.jsonl"
    rows = [{"image": str(p), "width": 128, "height": 128, "error": None, "detections": []}
            for p in _val_images(shapes_val)]  # fmt: skip
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("eval", "--data", shapes_val, "--pred", pred, "--no-plots", "--no-report",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "have no line" not in result.output


def test_coco_results_naming_only_some_images_is_not_warned(cli, shapes_val, tmp_path):
    """COCO results list only images with detections: an absent image is not a gap."""
    gt = json.loads(next((shapes_val / "annotations").glob("*val*.json")).read_text())
    first = gt["images"][0]
    rows = [{"image_id": first["id"], "category_id": gt["categories"][0]["id"],
             "bbox": [1, 1, 10, 10], "score": 0.5}]  # fmt: skip
    pred = tmp_path / "results.json"
    pred.write_text(json.dumps(rows))
    result = cli("eval", "--data", shapes_val, "--pred", pred, "--no-plots", "--no-report",
                 "--out", tmp_path / "eval")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "have no line" not in result.output
