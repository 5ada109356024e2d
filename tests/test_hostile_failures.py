"""Issue 11, rule 4: every failure is one line and the documented exit code; a bad item never
stops the run. Each test tries several instances of its rule."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontool.errors import ConfigError, ImageError


def one_error_line(result, code: int) -> str:
    """The result failed with `code` and said why in exactly one `error:` line."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output  # progress lines may lead
    assert "Traceback" not in result.output and "╭" not in result.output
    return errors[0]


# --- parser errors: one line with a hint to --help, exit 2 ---------------------------------


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["detect", "--bogus"], "visiontool detect"),  # unknown option
        (["detect", "x.jpg", "--conf", "abc"], "visiontool detect"),  # bad value
        (["anchors", "prior", "--sizes", "0.2"], "visiontool anchors prior"),  # missing option
        (["nosuchcommand"], "visiontool"),  # unknown command
        (["models", "--task"], "visiontool"),  # option without its value
        (["anchors", "grid", "--stride", "x"], "visiontool anchors grid"),
    ],
)
def test_usage_errors_are_one_line_with_a_help_hint(cli, args, command) -> None:
    line = one_error_line(cli(*args), 2)
    assert f"(see '{command} --help')" in line


def test_help_and_version_are_unchanged(cli) -> None:
    for args in (["--help"], ["detect", "--help"], ["anchors", "prior", "-h"]):
        result = cli(*args)
        assert result.exit_code == 0 and "Usage" in result.output and "error:" not in result.output
    assert cli("--version").exit_code == 0


# --- special files: skipped in folders, failed (not hung) when named -----------------------


def _special_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(folder / "ok.png")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "null.jpg").symlink_to("/dev/null")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.png"))
    server.close()
    return folder


def _within(seconds: float, fn, *args):
    """Run fn(*args) in a thread; fail (rather than hang the suite) if it does not return."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__}{args} hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_folder_scans_skip_fifos_devices_and_sockets(tmp_path: Path) -> None:
    from visiontool.io.sources import plan_sources

    folder = _special_folder(tmp_path)
    for recursive in (False, True):
        items = _within(30, list, plan_sources([str(folder)], recursive=recursive))
        assert [item.rel for item in items] == ["ok.png"]
    glob_items = _within(30, list, plan_sources([str(folder / "*")]))
    assert [item.rel for item in glob_items] == ["ok.png"]


def test_named_special_files_fail_at_once(tmp_path: Path) -> None:
    from visiontool.io.images import read_image

    read_image(_special_folder(tmp_path / "warm") / "ok.png")  # imports torch outside the timer
    folder = _special_folder(tmp_path)
    for path in ("fifo.jpg", "zero.png", "null.jpg", "sock.png"):
        with pytest.raises(ImageError, match="not a regular file"):
            _within(30, read_image, folder / path)
    with pytest.raises(ImageError, match="not a regular file"):
        _within(30, read_image, "/dev/null")
    assert tuple(_within(30, read_image, folder / "ok.png").shape) == (3, 24, 32)


def test_a_special_list_file_is_refused(tmp_path: Path) -> None:
    from visiontool.errors import DataError
    from visiontool.io.sources import plan_sources

    os.mkfifo(tmp_path / "list.txt")
    with pytest.raises(DataError, match="not a regular file"):
        _within(30, list, plan_sources([str(tmp_path / "list.txt")]))


# --- extreme aspect ratios: work, or fail per image ---------------------------------------


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (2, 40000), (40000, 2), (1, 1), (3, 7)])
def test_preresize_keeps_at_least_one_pixel(size: tuple[int, int]) -> None:
    import torch
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from visiontool.models.heads.torchvision_parts import preresize

    class Model:
        transform = GeneralizedRCNNTransform(320, 533, [0.0] * 3, [1.0] * 3)

    width, height = size
    resized, (sx, sy) = preresize(Model(), torch.rand(3, height, width))
    new_h, new_w = resized.shape[-2:]
    assert new_h >= 1 and new_w >= 1 and max(new_h, new_w) <= 533
    assert sx == pytest.approx(width / new_w) and sy == pytest.approx(height / new_h)
    batch, _ = Model.transform([resized])  # the model's own transform accepts it
    assert batch.tensors.shape[-1] >= 1


def test_classifier_crop_does_not_blow_up_a_strip() -> None:
    import torch

    from visiontool.engine.predict.predictor import classify_transform

    for height, width in ((2, 40000), (40000, 2), (1, 5000), (300, 200)):
        out = classify_transform(torch.rand(3, height, width), {"resize": 256, "crop": 224})
        assert tuple(out.shape) == (3, 224, 224)


@pytest.mark.slow
def test_detect_goes_on_past_strips_and_special_files(cli, tmp_path: Path) -> None:
    folder = _special_folder(tmp_path)
    for width, height in ((1, 3000), (3000, 1), (2, 20000), (1, 1)):
        Image.new("RGB", (width, height), "blue").save(folder / f"strip_{width}x{height}.png")
    out = tmp_path / "out"
    result = _within(
        240,
        cli,
        "detect", folder, folder / "fifo.jpg", "/dev/null", folder / "sock.png",
        "--model", "frcnn-mobile-320", "--weights", "none", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # three named special files failed
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    errors = {Path(row["image"]).name: row["error"] for row in rows}
    assert len(rows) == 8  # 5 images from the folder scan (special files skipped) + 3 named
    assert all(errors[f"strip_{w}x{h}.png"] is None for w, h in ((1, 3000), (3000, 1), (2, 20000)))
    assert errors["ok.png"] is None
    for name in ("fifo.jpg", "null", "sock.png"):
        assert "not a regular file" in errors[name]


def test_a_model_failure_fails_that_image_only() -> None:
    import torch

    from visiontool.engine.predict.predictor import ImagePrediction, Predictor

    predictor = Predictor.__new__(Predictor)
    predictor.task, predictor.device, predictor.autocast_dtype = "detect", torch.device("cpu"), None

    def detect(inputs):
        if any(image.shape[-1] == 1 for image in inputs):
            raise RuntimeError("Input and output sizes should be greater than 0")
        return [ImagePrediction(boxes=torch.zeros(0, 4)) for _ in inputs]

    predictor._detect = detect
    same = [torch.zeros(3, 8, 1, dtype=torch.uint8)]
    out = predictor.predict(same + [torch.zeros(3, 8, 8, dtype=torch.uint8)])
    assert "greater than 0" in out[0].error and out[1].error is None
    assert out[0].boxes.shape == (0, 4) and out[0].class_ids.numel() == 0


# --- sizes against a memory budget, before allocating ---------------------------------------


def test_check_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from visiontool.runtime import check_budget, memory_budget

    monkeypatch.setenv("VISIONTOOL_MAX_MEMORY", "1G")
    assert memory_budget() == 2**30
    check_budget(2**30, "ok")
    for needed in (2**30 + 1, float("inf"), float("nan"), 1e30):
        with pytest.raises(ConfigError, match="VISIONTOOL_MAX_MEMORY"):
            check_budget(needed, "--thing 9")
    for bad in ("lots", "-1G", "0", "nan"):
        monkeypatch.setenv("VISIONTOOL_MAX_MEMORY", bad)
        with pytest.raises(ConfigError):
            memory_budget()
    monkeypatch.delenv("VISIONTOOL_MAX_MEMORY")
    assert memory_budget() > 0


@pytest.mark.parametrize(
    "args",
    [
        ["detect", "x.png", "--model", "frcnn-mobile-320", "--imgsz", "100000"],
        ["data", "synth", "--imgsz", "1000000"],
        ["data", "synth", "--task", "classify", "--kind", "digits", "--imgsz", "200000"],
        [
            "anchors",
            "prior",
            "--sizes",
            "0.2",
            "--ratios",
            "1",
            "--size",
            "64x64",
            "--fmap",
            "100000x100000",
        ],  # fmt: skip
        ["anchors", "grid", "--size", "10000x10000", "--stride", "1"],
        [
            "anchors",
            "label",
            "--gt",
            "GT",
            "--sizes",
            "0.2",
            "--ratios",
            "1",
            "--fmap",
            "50000x50000",
        ],  # fmt: skip
    ],
)
def test_oversized_options_are_refused_before_allocating(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("VISIONTOOL_MAX_MEMORY", "1G")
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "GT").write_text(json.dumps({"classes": ["a"], "boxes": [[0, 0.1, 0.1, 0.5, 0.5]]}))
    out = tmp_path / "out"
    line = one_error_line(cli(*args, "--out", out), 2)
    assert "memory" in line and "VISIONTOOL_MAX_MEMORY" in line
    assert not out.exists() or not any(out.rglob("*.png"))


@pytest.mark.parametrize(
    "args",
    [
        ["prior", "--sizes", "nan", "--ratios", "1"],
        ["prior", "--sizes", "0.2", "--ratios", "inf"],
        ["prior", "--sizes", "0.2", "--ratios", "1", "--offset", "nan"],
        ["prior", "--sizes", "0.2", "--ratios", "1", "--fmap", "0x5"],
        ["grid", "--scales", "nan"],
        ["grid", "--border", "nan"],
        ["grid", "--stride", "0"],
        ["grid", "--ratios", "-1"],
    ],
)
def test_nan_inf_and_non_positive_numbers_are_refused(cli, tmp_path: Path, args) -> None:
    one_error_line(cli("anchors", *args, "--size", "64x64", "--out", tmp_path / "out"), 2)


def test_anchor_ops_refuse_nan_and_oversized_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    from visiontool.ops.anchors import grid_anchors, multibox_prior

    monkeypatch.setenv("VISIONTOOL_MAX_MEMORY", "64M")
    for sizes, ratios in (([float("nan")], [1.0]), ([0.2], [float("inf")]), ([0.0], [1.0])):
        with pytest.raises(ValueError):
            multibox_prior(4, 4, sizes, ratios)
    with pytest.raises(ValueError):
        multibox_prior(4, 4, [0.2], [1.0], offset=float("nan"))
    with pytest.raises(ConfigError, match="anchors"):
        multibox_prior(10_000, 10_000, [0.2], [1.0])
    with pytest.raises(ConfigError, match="anchors"):
        grid_anchors((10_000, 10_000), 1, [8.0], [1.0])
    with pytest.raises(ValueError):
        grid_anchors((64, 64), 16, [float("nan")], [1.0])
    assert grid_anchors((64, 64), 16, [8.0], [0.5, 1.0]).shape == (32, 4)


# --- OS and interpreter errors: one line naming the path --------------------------------


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EDQUOT, "quota"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permissions"),
        (errno.ENAMETOOLONG, "shorter"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    import visiontool.engine.anchors.show as show

    target = tmp_path / "out" / "anchors.png"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(show, "save_png", fail)
    line = one_error_line(
        cli(
            "anchors",
            "prior",
            "--sizes",
            "0.2",
            "--ratios",
            "1",
            "--size",
            "32x32",
            "--out",
            tmp_path / "out",
        ),  # fmt: skip
        2,
    )
    assert str(target) in line and words in line


@pytest.mark.parametrize(
    ("exc", "words"), [(MemoryError(), "out of memory"), (RecursionError(), "nested too deeply")]
)
def test_memory_and_recursion_errors_are_one_line(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, words: str
) -> None:
    import visiontool.engine.anchors.show as show

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(show, "save_png", fail)
    args = ("anchors", "prior", "--sizes", "0.2", "--ratios", "1", "--size", "32x32")
    assert words in one_error_line(cli(*args, "--out", tmp_path / "out"), 2)
    debug = cli("--debug", *args, "--out", tmp_path / "out2")
    assert debug.exit_code != 0 and isinstance(debug.exception, type(exc))


def test_deeply_nested_json_is_one_line(cli, tmp_path: Path) -> None:
    for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        gt = tmp_path / "gt.json"
        gt.write_text(text)
        line = one_error_line(
            cli(
                "anchors",
                "label",
                "--gt",
                gt,
                "--sizes",
                "0.2",
                "--ratios",
                "1",
                "--out",
                tmp_path / "out",
            ),  # fmt: skip
            2,
        )
        assert str(gt) in line


def test_output_paths_of_the_wrong_kind(cli, tmp_path: Path) -> None:
    from conftest import noise_image

    afile = tmp_path / "afile.png"
    noise_image(16, 16).save(afile)
    before = afile.read_bytes()
    one_error_line(cli("data", "synth", "--n", "2", "--out", afile), 2)
    assert afile.read_bytes() == before
    synth = tmp_path / "set"
    assert cli("data", "synth", "--n", "2", "--imgsz", "32", "--out", synth).exit_code == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    line = one_error_line(cli("data", "show", synth, "--out", folder), 2)
    assert "folder" in line and list(folder.iterdir()) == []


def test_benchmark_checks_the_model_before_making_images(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visiontool.engine.benchmark.pipeline as bench

    def no_photos(*args, **kwargs):
        raise AssertionError("images made before the model was checked")

    monkeypatch.setattr(bench, "make_photos", no_photos)
    for task in ("pipeline", "model"):
        assert "nosuchmodel" in one_error_line(
            cli("benchmark", "--task", task, "--model", "nosuchmodel"), 2
        )
        assert "weights" in one_error_line(
            cli("benchmark", "--task", task, "--weights", "/nonexistent/w.pt"), 3
        )
    one_error_line(cli("benchmark", "--task", "pipeline", "--n", "0"), 2)


def test_array_inputs_still_decode() -> None:
    """The regular-file check does not touch in-memory images."""
    from visiontool.engine.predict.stream import as_image_tensor

    assert tuple(as_image_tensor(np.zeros((4, 5, 3), np.uint8)).shape) == (3, 4, 5)


def test_an_annotated_picture_no_encoder_takes_fails_that_image_alone(cli, tmp_path):
    """A valid 1 x 2,000,000 px PNG: its annotated copy is past what PNG files hold, which
    stopped the whole run from the writer thread with a traceback. Now that image fails (its
    line still has its detections), the others are written, exit 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (1, 2_000_000), (200, 10, 10)).save(folder / "tall.png")
    Image.new("RGB", (64, 48), (20, 100, 10)).save(folder / "small.png")
    out = tmp_path / "out"
    result = cli("detect", folder, "--model", "shapes-tinyssd", "--device", "cpu", "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = {Path(r["image"]).name: r for r in map(json.loads, (out / "predictions.jsonl").open())}
    assert "at most 1000000 px a side" in lines["tall.png"]["error"]
    assert "detections" in lines["tall.png"] and lines["small.png"]["error"] is None
    assert (out / "small.png").is_file() and not (out / "tall.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 1 and summary["counts"]["images"] == 2
