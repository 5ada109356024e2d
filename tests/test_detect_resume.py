"""`detect --resume` and `detect` under torchrun: a stopped or split run ends as one whole run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import noise_image, save

REPO = Path(__file__).resolve().parents[1]
OPTS = ["--model", "shapes-tinyssd", "--save-coco", "--save-txt", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Eight shapes pictures, a same-stem pair (names a, a_2) and a corrupt file."""
    import numpy as np
    from PIL import Image

    from visiontool.data.synth import render_scene

    folder = tmp_path_factory.mktemp("resume-images")
    for i in range(8):
        image, _, _ = render_scene(np.random.default_rng([7, i]), 128)
        save(Image.fromarray(image), folder / f"s{i}.jpg")
    save(noise_image(96, 64, seed=1), folder / "s0.png")  # output name s0_2
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


@pytest.fixture(scope="module")
def whole(images, tmp_path_factory) -> Path:
    """One uninterrupted run: what every resumed or split run must equal."""
    from visiontool.engine.predict.detect import DetectConfig, run_detect

    out = tmp_path_factory.mktemp("whole") / "run"
    run_detect(DetectConfig(sources=[str(images)], out=out, **_api_opts()))
    return out


def _api_opts() -> dict:
    return dict(model="shapes-tinyssd", save_coco=True, save_txt=True, device="cpu")


def lines(path: Path) -> list[dict]:
    """predictions.jsonl without the timings (which differ between runs)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("time_ms")
    return rows


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def assert_same_run(a: Path, b: Path) -> None:
    assert lines(b / "predictions.jsonl") == lines(a / "predictions.jsonl")
    assert (b / "coco_results.json").read_bytes() == (a / "coco_results.json").read_bytes()
    assert files(b) == files(a)
    for name in files(a):
        if name.startswith("labels/"):
            assert (b / name).read_bytes() == (a / name).read_bytes(), name
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sb["counts"] == sa["counts"]
    assert sb["failures"] == sa["failures"]


def test_resume_after_a_kill_mid_line_equals_one_whole_run(images, whole, tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    # what a run killed after 4 results leaves: args.json, 4 lines and half a fifth, their files
    (out / "args.json").write_bytes((whole / "args.json").read_bytes())
    kept = (whole / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(kept[:4]) + kept[4][:40])
    for row in map(json.loads, kept[:4]):
        for name in row.get("saved", []):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes((whole / name).read_bytes())
    result = cli("detect", str(images), *OPTS, "--out", str(out), "--resume")
    assert result.exit_code == 1, result.output  # the corrupt file, as in the whole run
    assert "4 input(s) already done" in result.output
    assert "half-written last line" in result.output
    assert "(4 done before --resume)" in result.output
    assert_same_run(whole, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == 4 and summary["counts"]["images"] == 10
    # resuming a finished run does nothing more, and changes nothing
    before = (out / "predictions.jsonl").read_bytes()
    again = cli("detect", str(images), *OPTS, "--out", str(out), "--resume")
    assert "10 input(s) already done" in again.output
    assert (out / "predictions.jsonl").read_bytes() == before


def test_resume_refuses_other_options_and_misuse(images, whole, tmp_path, cli):
    out = tmp_path / "run"
    cli("detect", str(images), *OPTS, "--out", str(out))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    changed = cli("detect", str(images), *OPTS, "--out", str(out), "--resume", "--conf", "0.5")
    assert changed.exit_code == 2
    assert "--conf 0.5 (the run had unset)" in changed.output
    both = cli("detect", str(images), *OPTS, "--out", str(out), "--resume", "--exist-ok")
    assert both.exit_code == 2 and "pick one" in both.output
    assert cli("detect", str(images), *OPTS, "--resume").exit_code == 2  # no --out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    # a folder of other files is not a run to carry on: refused, untouched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    refused = cli("detect", str(images), *OPTS, "--out", str(other), "--resume")
    assert refused.exit_code == 2 and "holds no detect run" in refused.output
    assert files(other) == ["notes.txt"]
    # videos (many results an input) and report.html cannot be split and re-joined
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really")
    assert cli("detect", str(video), *OPTS, "--out", str(tmp_path / "v"), "--resume").exit_code == 2
    report = cli("detect", str(images), *OPTS, "--out", str(tmp_path / "r"), "--resume", "--report")
    assert report.exit_code == 2 and "--report" in report.output


def test_resume_of_a_new_folder_is_a_whole_run(images, whole, tmp_path, cli):
    out = tmp_path / "new"
    result = cli("detect", str(images), *OPTS, "--out", str(out), "--resume")
    assert "nothing to resume" in result.output
    assert_same_run(whole, out)


def test_resume_folds_in_the_parts_a_killed_torchrun_job_left(images, whole, tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "args.json").write_bytes((whole / "args.json").read_bytes())
    rows = (whole / "predictions.jsonl").read_text().splitlines()
    # round-robin shares, cut short unevenly: rank 1 got further, leaving holes at 4 and 6
    for rank, done in ((0, (0, 2)), (1, (1, 3, 5, 7))):
        part = [json.dumps({**json.loads(rows[i]), "_order": i}) for i in done]
        for i in done:
            for name in json.loads(rows[i]).get("saved", []):
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes((whole / name).read_bytes())
        (out / f"predictions.rank{rank}.jsonl").write_text("\n".join(part) + "\n" + '{"ima')
    result = cli("detect", str(images), *OPTS, "--out", str(out), "--resume")
    assert "6 input(s) already done" in result.output and "process parts" in result.output
    assert not list(out.glob("predictions.rank*.jsonl"))
    # the holes were filled at the end, then the file put back in input order: the same
    # lines, and the same coco_results.json ids (taken from line positions)
    assert_same_run(whole, out)


def test_exist_ok_removes_unmerged_parts_and_args(images, tmp_path, cli):
    out = tmp_path / "run"
    cli("detect", str(images), *OPTS, "--out", str(out))
    (out / "predictions.rank1.jsonl").write_text(
        '{"image": "x", "saved": ["s1.jpg"], "_order": 1}\n'
    )
    (out / "keep.txt").write_text("mine")
    cli("detect", str(images), "--model", "shapes-tinyssd", "--out", str(out), "--exist-ok")
    assert (out / "keep.txt").read_text() == "mine"
    assert not (out / "predictions.rank1.jsonl").exists()
    assert not (out / "labels").exists()  # the earlier run's labels went with it


def test_plan_shards_and_skips_partition_the_inputs(tmp_path):
    from visiontool.io.sources import plan_sources

    for i in range(7):
        save(noise_image(8, 8, seed=i), tmp_path / f"{i}.png")
    plan = plan_sources([str(tmp_path), str(tmp_path / "3.png")])  # 3.png twice
    every = [item.rel for item in plan]
    assert len(every) == 8 and every[-1] == "3_2.png"
    shards = [[i.rel for i in plan.select(shard=(r, 3))] for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(every)
    assert shards[0] == [every[0], every[3], every[6]]
    # skip counts occurrences: 3.png done once leaves its second listing
    skipped = plan.select(skip={str(tmp_path / "3.png"): 1, str(tmp_path / "0.png"): 1})
    assert [i.rel for i in skipped] == [r for r in every if r not in ("0.png", "3.png")]
    halves = [
        [i.rel for i in skipped.select(skip=dict(skipped.skip), shard=(r, 2))] for r in (0, 1)
    ]
    assert sorted(sum(halves, [])) == sorted(i.rel for i in skipped)


def test_plan_names_are_a_whole_runs_names(tmp_path):
    from visiontool.io.sources import plan_sources
    from visiontool.io.writers import OutputNames, PlanNames

    for name in ("a.gif", "a.png", "b.jpg", "B.png", "c.jpg"):
        save(noise_image(8, 8), tmp_path / name)
    plan = plan_sources([str(tmp_path)])
    whole = OutputNames()
    expected = {item.rel: whole.base(item.rel) for item in plan}
    part = plan.select(shard=(1, 2))
    names = PlanNames(part)
    for item in part:  # this process sees every other input, and still names them alike
        assert names.base(item.rel) == expected[item.rel]
    assert [str(v) for v in expected.values()] == ["B", "a", "a_2", "b_2", "c"]


def test_repair_tail_cuts_only_a_partial_line(tmp_path):
    from visiontool.engine.predict.merge import repair_tail

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c"')
    assert repair_tail(path) == 4
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert repair_tail(path) == 0
    path.write_bytes(b'{"no newline at all"')
    assert repair_tail(path) == len(b'{"no newline at all"') and path.read_bytes() == b""


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(images, tmp_path):
    from tests.test_train import free_port

    out = tmp_path / "split"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    # the reference also runs with one thread a process: thread counts move the last digits
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "visiontool", "detect", str(images), *OPTS, "--out",
                    str(one)], env=env, cwd=REPO, capture_output=True)  # fmt: skip
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "visiontool", "detect",
                          str(images), *OPTS, "--out", str(out)], env=env, cwd=REPO,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0  # the corrupt file: exit 1 from every process, as one run
    # torchrun reports a process's exit 1 with a traceback of its own; none from ours
    frames = [line for line in run.stderr.splitlines() if line.strip().startswith('File "')]
    assert not [f for f in frames if "/visiontool/" in f], run.stderr[-3000:]
    assert run.stdout.count("results saved to") == 1, run.stdout  # rank 0 speaks for the job
    assert_same_run(one, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["resumed"] == 0
    assert not list(out.glob("predictions.rank*.jsonl"))
    # rank 0 refuses the resume: every process says why in one line, none waits or dumps gloo
    refused = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                              f"--master_port={free_port()}", "-m", "visiontool", "detect",
                              str(images), *OPTS, "--out", str(out), "--resume", "--conf", "0.5"],
                             env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.count("error: --resume: options differ") == 2, refused.stderr[-3000:]
    assert "[rank1]" not in refused.stderr and "Connection closed" not in refused.stderr


def test_a_run_that_cannot_load_its_model_leaves_no_folder(images, tmp_path, cli):
    out = tmp_path / "never"
    result = cli("detect", str(images), "--weights", str(tmp_path / "missing.pt"),
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 3 and "not found" in result.output  # a weights error
    assert not out.exists()  # args.json is written only once the model loaded
