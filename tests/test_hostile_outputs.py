"""Issue 11, rule 2: output folders never destroy or mix user data.

An output folder that is or contains an input, or lies in a folder read with -r, is refused;
an existing --out needs --exist-ok (which replaces only this command's own files); two runs
never share one folder; per-image outputs of inputs sharing a stem get `_2`; SIGTERM
finalises like Ctrl-C. Output-folder problems are found before any model is loaded: the
runs below name a checkpoint that does not exist, which would be exit 3 if it were read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import noise_image, save
from visiontool.io.paths import LOCK_NAME, prepare_out

MODEL = ["--model", "frcnn-mobile-320", "--weights", "none", "--workers", "0"]
NO_MODEL = ["--weights", "/nonexistent/model.pt", "--workers", "0"]  # exit 3 if ever loaded


def one_error_line(result, code: int, *words: str) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "imgs"
    for i in range(3):
        save(noise_image(64, 48, seed=i), root / f"img{i}.jpg")
    save(noise_image(64, 48, seed=7), root / "sub" / "deep.png")
    return root


def test_out_that_is_contains_or_lies_in_an_input_is_refused_before_the_model(
    cli, images, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text(f"{images / 'img0.jpg'}\n")
    before = snapshot(images)
    cases = [
        ([images], images),  # detect DIR --out DIR
        ([images], tmp_path),  # out contains the input folder
        ([images / "img1.jpg"], images),  # out contains an input file
        ([images, "-r"], images / "sub"),  # out inside a folder read with -r
        ([images, "-r"], images / "new"),  # ...even a folder that does not exist yet
        ([str(images / "*.jpg")], images),  # glob root
        ([str(images / "**" / "*.png")], images / "sub" / "x"),  # recursive glob
        (["list.txt"], images),  # an entry of a list file
        ([Path("imgs") / ".." / "imgs"], Path(images)),  # spelled differently
    ]
    for sources, out in cases:
        result = cli("detect", *sources, *NO_MODEL, "--out", out, "--exist-ok")
        one_error_line(result, 2, "--out", "outside")
    stdin = cli("detect", "-", *NO_MODEL, "--out", images, input=f"{images / 'img2.jpg'}\n")
    one_error_line(stdin, 2, "--out")
    assert snapshot(images) == before  # nothing written or removed
    assert not (images / "new").exists() and not (images / "sub" / "x").exists()


def test_out_beside_the_inputs_is_fine(cli, images, tmp_path):
    out = images / "annotated"  # inside a folder read without -r: never read back
    assert cli("detect", images, *MODEL, "--out", out).exit_code == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert not (out / LOCK_NAME).exists()


def test_existing_out_needs_exist_ok_for_every_command(cli, images, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    save(noise_image(32, 32), out / "photo.jpg")
    before = snapshot(out)
    runs = [
        ("detect", images, *NO_MODEL, "--out", out),
        ("train", "--data", images, "--model", "lenet", "--task", "classify", "--out", out),
        (
            "anchors",
            "prior",
            "--size",
            "64x64",
            "--fmap",
            "2x2",
            "--sizes",
            "0.5",
            "--ratios",
            "1",
            "--out",
            out,
        ),
        ("anchors", "grid", "--size", "64x64", "--out", out),
        ("data", "synth", "--n", "2", "--out", out),
        ("data", "synth", "--task", "classify", "--n", "2", "--out", out),
    ]
    for args in runs:
        one_error_line(cli(*args), 2, str(out), "--exist-ok")
    assert snapshot(out) == before
    file_out = tmp_path / "afile"
    file_out.write_text("x")
    one_error_line(cli("detect", images, *NO_MODEL, "--out", file_out), 2, "is a file")
    one_error_line(cli("data", "synth", "--n", "2", "--out", file_out), 2, "is a file")
    assert file_out.read_text() == "x"


def test_exist_ok_replaces_only_the_earlier_runs_own_files(cli, images, tmp_path):
    out = tmp_path / "run"
    first = cli("detect", images, "-r", *MODEL, "--out", out, "--save-txt", "--save-coco")
    assert first.exit_code == 0
    (out / "notes.md").write_text("user file")
    save(noise_image(20, 20), out / "mine.png")  # an image the tool did not write
    second = cli("detect", images / "img0.jpg", *MODEL, "--out", out, "--exist-ok")
    assert second.exit_code == 0, second.output
    assert "replacing" in second.output and "img1.jpg" in second.output
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == ["args.json", "img0.jpg", "mine.png", "notes.md", "predictions.jsonl",
                    "summary.json"]  # fmt: skip
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1


def test_exist_ok_keeps_the_earlier_run_when_the_new_one_fails_to_start(cli, images, tmp_path):
    """--exist-ok removed the earlier run's files when the folder was claimed, before the
    model or the options were checked: a typo in --model or --classes emptied the folder."""
    from visiontool.data.synth import synth_classification

    out = tmp_path / "run"
    assert cli("detect", images, "-r", *MODEL, "--out", out, "--save-txt").exit_code == 0
    before = snapshot(out)
    for bad in (["--model", "nosuchmodel"], ["--classes", "nosuch"], NO_MODEL):
        options = [*MODEL, *bad] if bad[0] == "--classes" else bad
        result = cli("detect", images, "-r", *options, "--out", out, "--exist-ok")
        assert result.exit_code in (2, 3) and "Traceback" not in result.output, result.output
        assert snapshot(out) == before, bad
    digits = tmp_path / "digits"
    synth_classification(digits, n=20, imgsz=32, seed=1, kind="digits")
    train = tmp_path / "train"
    common = ["train", "--task", "classify", "--data", digits, "--epochs", "1", "--workers", "0"]
    assert cli(*common, "--model", "lenet", "--out", train).exit_code == 0
    before = snapshot(train)
    result = cli(*common, "--model", "nosuchmodel", "--out", train, "--exist-ok")
    assert result.exit_code == 2 and snapshot(train) == before, result.output
    # the run that does start replaces them, and says so
    again = cli(*common, "--model", "lenet", "--out", train, "--exist-ok")
    assert again.exit_code == 0 and "replacing" in again.output, again.output


def test_eval_exist_ok_keeps_the_earlier_results_until_a_run_succeeds(cli, tmp_path):
    from visiontool.data.synth import synth_detection

    data = tmp_path / "shapes"
    synth_detection(data, n=10, imgsz=96, seed=3)
    out = tmp_path / "ev"
    common = ["eval", "--data", data, "--device", "cpu", "--workers", "0", "--out", out]
    assert cli(*common, "--model", "shapes-tinyssd").exit_code == 0
    before = snapshot(out)
    assert {"metrics.json", "pr_curve.png", "confusion_matrix.png"} <= set(before)
    failed = cli(*common, "--model", "nosuchmodel", "--exist-ok")
    assert failed.exit_code == 2 and snapshot(out) == before, failed.output
    # a run without plots: its metrics.json replaces the old one, the old plots go
    again = cli(*common, "--model", "shapes-tinyssd", "--exist-ok", "--no-plots", "--no-report")
    assert again.exit_code == 0 and "replacing" in again.output, again.output
    assert sorted(snapshot(out)) == ["metrics.json"]


def test_exist_ok_refuses_to_overwrite_a_file_no_earlier_run_wrote(cli, images, tmp_path):
    """--exist-ok said "other files there are kept", then wrote img0.jpg over the user's own
    img0.jpg (and labels/img1.txt): only files an earlier detect run wrote are replaced."""
    for clash in ("img0.jpg", "labels/img1.txt"):
        out = tmp_path / clash.replace("/", "_")
        (out / clash).parent.mkdir(parents=True)
        (out / clash).write_text("the user's own")
        result = cli("detect", images, *MODEL, "--save-txt", "--out", out, "--exist-ok")
        one_error_line(result, 2, "--exist-ok would overwrite 1 file(s)", clash)
        assert snapshot(out) == {clash: b"the user's own"}


def test_synth_exist_ok_leaves_no_old_images_beside_new_annotations(cli, tmp_path):
    for fmt in ("coco", "yolo", "voc"):
        out = tmp_path / fmt
        assert cli("data", "synth", "--n", "6", "--imgsz", "32", "--format", fmt,
                   "--out", out).exit_code == 0  # fmt: skip
        (out / "README.txt").write_text("mine")
        again = cli("data", "synth", "--n", "3", "--imgsz", "32", "--format", fmt, "--out", out,
                    "--exist-ok")  # fmt: skip
        assert again.exit_code == 0, again.output
        images = [p for p in out.rglob("*.jpg")]
        assert len(images) == 3, (fmt, images)
        assert (out / "README.txt").read_text() == "mine"
        check = cli("data", "check", out)
        assert check.exit_code == 0, check.output


def test_a_locked_folder_is_refused_naming_the_holder(cli, images, tmp_path):
    out = tmp_path / "busy"
    with prepare_out(out, "detect") as held:
        assert (held.path / LOCK_NAME).is_file()
        for args in (
            ("detect", images, *NO_MODEL, "--out", out, "--exist-ok"),
            (
                "anchors",
                "prior",
                "--size",
                "64x64",
                "--fmap",
                "2x2",
                "--sizes",
                "0.5",
                "--ratios",
                "1",
                "--out",
                out,
                "--exist-ok",
            ),
            ("data", "synth", "--n", "2", "--out", out, "--exist-ok"),
        ):
            one_error_line(cli(*args), 2, "in use", f"pid {os.getpid()}")
    assert not (out / LOCK_NAME).exists()  # removed when the run ends
    (out / LOCK_NAME).write_text("pid 999999: visiontool detect (killed)\n")  # a stale lock
    assert cli("detect", images / "img0.jpg", *MODEL, "--out", out, "--exist-ok").exit_code == 0
    assert not (out / LOCK_NAME).exists()


def test_a_second_process_into_a_locked_folder_exits_2(images, tmp_path):
    out = tmp_path / "busy"
    code = (
        "import sys, time; from visiontool.io.paths import prepare_out\n"
        f"h = prepare_out({str(out)!r}, 'detect'); print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run(
            [sys.executable, "-m", "visiontool", "detect", str(images), *NO_MODEL,
             "--out", str(out), "--exist-ok"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).exists()  # killed holder: stale file, no lock held
    assert prepare_out(out, "detect", exist_ok=True).path == out


def test_inputs_sharing_a_stem_get_2_in_every_output(cli, tmp_path):
    src = tmp_path / "src"
    names = ["a.gif", "a.png", "b.jpg", "b.png", "B.jpeg", "c.jpg", "c_2.jpg"]
    for i, name in enumerate(names):
        save(noise_image(40 + i, 30, seed=i), src / name)
    out = tmp_path / "run"
    result = cli("detect", src, *MODEL, "--conf", "0", "--max-det", "1", "--out", out,
                 "--save-txt")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(names)
    bases = []
    for row in rows:
        image, label = row["saved"]
        assert label == f"labels/{Path(image).stem}.txt"  # one name per input everywhere
        assert (out / image).is_file() and (out / label).is_file()
        bases.append(Path(image).stem.casefold())
        width = int(json.loads(json.dumps(row))["width"])
        assert width == 40 + names.index(Path(row["image"]).name)
    assert len(set(bases)) == len(names)  # nothing overwritten
    assert len(list(out.glob("*.*"))) - 3 == len(names)  # + args.json, predictions, summary
    assert len(list((out / "labels").glob("*.txt"))) == len(names)
    by_input = {Path(r["image"]).name: r["saved"][0] for r in rows}
    assert by_input["a.gif"] == "a.png" and by_input["a.png"] == "a_2.png"
    assert by_input["b.jpg"] != by_input["b.png"]


@pytest.mark.slow
def test_sigterm_finalises_like_ctrl_c(images, tmp_path):
    src = tmp_path / "many"
    for i in range(40):
        save(noise_image(96, 72, seed=i), src / f"{i:03d}.jpg")
    out = tmp_path / "run"
    env = {**os.environ, "CI": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "visiontool", "detect", str(src), *MODEL, "--out", str(out),
         "--save-coco", "--save-txt"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if line.startswith(("image 2 ", "image 2/")):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert 2 <= summary["counts"]["images"] < 40
    assert not list(out.rglob("*.tmp")) and not (out / LOCK_NAME).exists()
    coco = json.loads((out / "coco_results.json").read_text())
    assert isinstance(coco, list)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == summary["counts"]["images"]
    time.sleep(0)


def test_nothing_is_written_through_a_link_out_of_the_folder_or_over_a_device(
    cli, images, tmp_path
):
    """A `labels` link inside --out carried detect's label files out of it; export
    --exist-ok replaced a pipe (and, as root, /dev/null) with a regular file."""
    from visiontool.io.atomic import write_bytes

    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / "labels").symlink_to(outside)
    result = cli("detect", images, *MODEL, "--save-txt", "--out", out, "--exist-ok")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(errors) == 1 and "leads outside the output folder" in errors[0]
    assert list(outside.iterdir()) == []
    pipe = tmp_path / "model.onnx"
    os.mkfifo(pipe)
    result = cli("export", "--model", "digits-lenet", "--out", pipe, "--exist-ok")
    one_error_line(result, 2, "is not a regular file")
    with pytest.raises(FileExistsError):
        write_bytes(pipe, b"x")  # every atomic write: a pipe, device or folder stays
    assert pipe.is_fifo()


def test_exist_ok_replaces_nothing_in_a_folder_without_an_earlier_run_of_that_command(
    cli, images, tmp_path
):
    """--exist-ok removed files by name: detect into a train run's folder took its args.json,
    eval its confusion_matrix.png, and train a user's results.csv and weights/last.pt."""
    from visiontool.data.synth import synth_classification

    digits = tmp_path / "digits"
    synth_classification(digits, n=20, imgsz=32, seed=1, kind="digits")
    common = ["--task", "classify", "--data", digits, "--epochs", "1", "--workers", "0"]
    trained = tmp_path / "trained"
    assert cli("train", *common, "--model", "lenet", "--out", trained).exit_code == 0
    before = snapshot(trained)
    detect = cli("detect", images, *MODEL, "--out", trained, "--exist-ok")
    one_error_line(detect, 2, "named like `detect` outputs", "args.json")
    evaluate = cli("eval", "--data", digits, "--model", "digits-lenet", "--workers", "0",
                   "--out", trained, "--exist-ok")  # fmt: skip
    one_error_line(evaluate, 2, "named like `eval` outputs", "confusion_matrix.png")
    assert snapshot(trained) == before
    users = tmp_path / "users"
    for name in ("results.csv", "weights/last.pt", ".notes.tmp"):
        (users / name).parent.mkdir(parents=True, exist_ok=True)
        (users / name).write_text("the user's own")
    result = cli("train", *common, "--model", "lenet", "--out", users, "--exist-ok")
    one_error_line(result, 2, "named like `train` outputs", "no earlier `train` run")
    assert len(snapshot(users)) == 3
