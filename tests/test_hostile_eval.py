"""Issue 11, rule 3 "no silent wrong answer" for detect outputs, eval and the model list.

- coco_results.json is scored against the data set it came from, whatever its image ids say:
  `detect --save-coco --data` writes the data set's ids, and `eval` matches by `file_name` when
  the ids disagree (and says which matching it used).
- `--fail-under` thresholds that can never fail (NaN, infinite, outside [0, 1]) are refused.
- An image given twice in a predictions file is an error (exit 2 naming both lines), unless
  `--lenient` (the first is kept, with a warning).
- Enumerated options refuse unknown values with one line naming the choices.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GT_IMAGES = [(11, "val/a.jpg"), (12, "val/b.jpg"), (13, "val/sub/c.jpg")]
# (image as written by detect, box xyxy, score, class name)
DETS = [
    ("val/a.jpg", [0, 0, 10, 10], 0.9, "cat"),
    ("val/a.jpg", [40, 40, 88, 90], 0.8, "dog"),
    ("val/b.jpg", [20, 20, 50, 40], 0.6, "cat"),
    ("val/b.jpg", [60, 0, 100, 40], 0.5, "dog"),
    ("val/sub/c.jpg", [5, 5, 30, 30], 0.7, "dog"),
]
CLASSES = ["cat", "dog"]


def write_gt(tmp_path: Path) -> Path:
    anns = [
        (11, 1, [0, 0, 10, 10]), (12, 2, [40, 40, 50, 50]), (12, 1, [20, 20, 30, 20]),
        (13, 2, [5, 5, 25, 25]), (11, 2, [40, 40, 48, 50]),
    ]  # fmt: skip
    gt = {
        "images": [
            {"id": i, "file_name": name, "width": 100, "height": 100} for i, name in GT_IMAGES
        ],
        "annotations": [
            {"id": n, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, (i, c, b) in enumerate(anns, 1)
        ],  # fmt: skip
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def coco_rows(ids: dict[str, int], *, names: dict[str, str] | None = None) -> list[dict]:
    """COCO results rows for DETS with the given image ids (and file_name, as detect writes)."""
    rows = []
    for image, box, score, label in DETS:
        row = {
            "image_id": ids[image],
            "category_id": CLASSES.index(label) + 1,
            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
            "score": score,
        }
        if names is not None:
            row["file_name"] = names[image]
        rows.append(row)
    return rows


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def write_jsonl(path: Path, images: list[str], dets=DETS) -> Path:
    """One line per entry of `images` (repeats allowed), each with that image's detections."""
    lines = []
    for image in images:
        found = [
            {"box": box, "score": score, "class_id": CLASSES.index(label), "label": label}
            for name, box, score, label in dets
            if name == image or image.endswith("/" + name)
        ]
        lines.append(json.dumps({"image": image, "width": 100, "height": 100,
                                 "detections": found, "time_ms": 1.0, "error": None}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def score(cli, gt: Path, pred: Path, out: Path, *extra: str):
    result = cli("eval", "--data", gt, "--pred", pred, "--out", out, "--no-plots", "--json",
                 *extra)  # fmt: skip
    return result


def metrics_of(result) -> dict:
    assert result.exit_code == 0, result.output
    text = result.stdout
    return json.loads(text[text.index("{") :])


# --- coco_results.json scored against its own data set -------------------------------------


def test_coco_results_match_by_file_name_when_ids_disagree(cli, tmp_path):
    """Positional ids (what detect wrote without --data), shifted ids, colliding ids: all score
    exactly as the right ids do, matched by file name, and the report says so."""
    gt = write_gt(tmp_path)
    right = {name: i for i, name in GT_IMAGES}
    names = {name: Path(name).relative_to("val").as_posix() for _, name in GT_IMAGES}
    reference = metrics_of(score(cli, gt, write_json(tmp_path / "ok.json", coco_rows(right)),
                                 tmp_path / "ref"))  # fmt: skip
    assert reference["matching"] == "by image id"
    assert reference["map50"] > 0
    cases = {
        "positional": {"val/a.jpg": 1, "val/b.jpg": 2, "val/sub/c.jpg": 3},
        "shifted": {"val/a.jpg": 12, "val/b.jpg": 13, "val/sub/c.jpg": 11},
        "colliding": {"val/a.jpg": 1, "val/b.jpg": 1, "val/sub/c.jpg": 1},
    }
    for case, ids in cases.items():
        pred = write_json(tmp_path / f"{case}.json", coco_rows(ids, names=names))
        metrics = metrics_of(score(cli, gt, pred, tmp_path / case))
        assert metrics["matching"] == "by file name", case
        for key in ("map", "map50", "voc_map50"):
            assert metrics[key] == pytest.approx(reference[key], abs=1e-12), (case, key)
    # right ids with file names: by image id, same numbers
    pred = write_json(tmp_path / "named.json", coco_rows(right, names=names))
    metrics = metrics_of(score(cli, gt, pred, tmp_path / "named"))
    assert metrics["matching"] == "by image id"
    assert metrics["map"] == pytest.approx(reference["map"], abs=1e-12)


def test_coco_results_that_cannot_be_matched_exit_2(cli, tmp_path):
    gt = write_gt(tmp_path)
    names = {name: name for _, name in GT_IMAGES}
    wrong = {"val/a.jpg": 12, "val/b.jpg": 11, "val/sub/c.jpg": 13}
    # ids disagree with names, and one row has no file_name: no way to know which is right
    rows = coco_rows(wrong, names=names)
    del rows[2]["file_name"]
    result = score(cli, gt, write_json(tmp_path / "mixed.json", rows), tmp_path / "m")
    assert result.exit_code == 2
    assert "mixed.json" in result.output and "entry 3 has no file_name" in result.output
    # names of images the data set lacks, with wrong ids: named, never scored as 0
    rows = coco_rows(wrong, names={k: f"other/{Path(k).name}x" for k in names})
    result = score(cli, gt, write_json(tmp_path / "foreign.json", rows), tmp_path / "f")
    assert result.exit_code == 2
    assert "not in the data set" in result.output
    assert "Traceback" not in result.output


def test_coco_results_writer_uses_given_image_ids(tmp_path):
    from visiontool.io.writers import CocoResultsWriter
    from visiontool.results import Detection, ImageResult

    def result(rel: str) -> ImageResult:
        det = Detection(box=(1.0, 2.0, 11.0, 22.0), score=0.5, class_id=0, label="cat")
        return ImageResult(image=f"/x/{rel}", rel=rel, width=50, height=50, detections=[det])

    ids = {"a.jpg": 7, "sub/b.jpg": 3}
    writer = CocoResultsWriter(tmp_path / "r.json", [1], image_ids=lambda r: ids.get(r.rel))
    for rel in ("a.jpg", "sub/b.jpg", "5.jpg", "z.jpg"):
        writer.write(result(rel))
    writer.close()
    rows = json.loads((tmp_path / "r.json").read_text())
    got = {r["file_name"]: r["image_id"] for r in rows}
    assert got == {"a.jpg": 7, "sub/b.jpg": 3, "5.jpg": 5, "z.jpg": 4}


@pytest.mark.slow
def test_detect_save_coco_scores_like_jsonl_and_model(cli, tmp_path):
    """The shipped shapes model on a synthetic set: detect --save-coco --data, then eval of its
    coco_results.json == eval of its predictions.jsonl == eval --model. Without --data the
    ids are not the data set's, and eval still gets the same numbers by file name."""
    data = tmp_path / "D"
    assert cli("data", "synth", "--out", data, "--n", "8", "--imgsz", "128", "--seed", "3",
               "--quiet").exit_code == 0  # fmt: skip
    images = data / "images" / "val"
    common = ("-m", "shapes-frcnn", "--conf", "0.001", "--max-det", "100", "--no-save-img",
              "--save-coco", "--device", "cpu", "--quiet")  # fmt: skip
    runs = {}
    for name, extra in (("with_data", ("--data", data)), ("without", ())):
        run = tmp_path / name
        result = cli("detect", images, *common, "--out", run, *extra)
        assert result.exit_code == 0, result.output
        runs[name] = run
    rows = json.loads((runs["with_data"] / "coco_results.json").read_text())
    gt = json.loads((data / "annotations" / "instances_val.json").read_text())
    by_name = {img["file_name"]: img["id"] for img in gt["images"]}
    assert {(r["file_name"], r["image_id"]) for r in rows} <= set(by_name.items())

    def evaluate(*args) -> dict:
        out = tmp_path / f"e{len(list(tmp_path.iterdir()))}"
        return metrics_of(cli("eval", "--data", data, "--out", out, "--no-plots", "--json",
                              "--device", "cpu", *args))  # fmt: skip

    model = evaluate("--model", "shapes-frcnn")
    jsonl = evaluate("--pred", runs["with_data"] / "predictions.jsonl")
    coco = evaluate("--pred", runs["with_data"] / "coco_results.json")
    old = evaluate("--pred", runs["without"] / "coco_results.json")
    assert model["map50"] > 0.5
    assert coco["matching"] == "by image id" and old["matching"] == "by file name"
    for key in ("map", "map50", "map75", "voc_map50"):
        for other in (jsonl, coco, old):
            assert other[key] == pytest.approx(model[key], abs=2e-3), key


def test_detect_data_needs_save_coco_and_a_readable_data_set(cli, tmp_path):
    image = tmp_path / "img.jpg"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    result = cli("detect", image, "-m", "shapes-frcnn", "--data", tmp_path / "gt.json",
                 "--out", tmp_path / "o1")  # fmt: skip
    assert result.exit_code == 2 and "--save-coco" in result.output
    for bad in (tmp_path / "missing", write_json(tmp_path / "list.json", [])):
        result = cli("detect", image, "-m", "shapes-frcnn", "--save-coco", "--data", bad,
                     "--out", tmp_path / f"o_{bad.name}")  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


# --- --fail-under -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "gate",
    ["map50=nan", "map50=NaN", "map=inf", "voc_map50=-inf", "map75=1e999", "map50=1.5",
     "mar_100=-0.1", "top1=nan", "map50=", "=0.5", "map50"],
)  # fmt: skip
def test_fail_under_refuses_gates_that_cannot_work(cli, tmp_path, gate):
    gt = write_gt(tmp_path)
    pred = write_json(tmp_path / "p.json", coco_rows({n: i for i, n in GT_IMAGES}))
    result = score(cli, gt, pred, tmp_path / "o", "--fail-under", gate)
    assert result.exit_code == 2, (gate, result.output)
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_fail_under_every_metric_name(cli, tmp_path):
    """Each detection key: 0 passes, 1 misses (our metrics are < 1 here), nan refused; a key
    given twice is refused rather than silently replaced."""
    from visiontool.engine.evaluate.run import DETECTION_KEYS

    gt = write_gt(tmp_path)
    pred = write_json(tmp_path / "p.json", coco_rows({n: i for i, n in GT_IMAGES}))
    for key in DETECTION_KEYS:
        ok = score(cli, gt, pred, tmp_path / f"{key}0", "--fail-under", f"{key}=0")
        metrics = metrics_of(ok) if ok.exit_code == 0 else None
        if metrics is None:  # only an undefined (-1) metric misses a 0 gate
            assert ok.exit_code == 1, ok.output
        missed = score(cli, gt, pred, tmp_path / f"{key}n", "--fail-under", f"{key}=nan")
        assert missed.exit_code == 2, (key, missed.output)
    twice = score(cli, gt, pred, tmp_path / "tw", "--fail-under", "map50=0.1",
                  "--fail-under", "map50=0.9")  # fmt: skip
    assert twice.exit_code == 2 and "twice" in twice.output
    high = score(cli, gt, pred, tmp_path / "hi", "--fail-under", "map50=1")
    assert high.exit_code == 1


def test_engine_refuses_non_finite_gates():
    from visiontool.engine.evaluate.run import check_gate_values
    from visiontool.errors import ConfigError

    for value in (float("nan"), float("inf"), -float("inf"), 1.0001, -1.0):
        with pytest.raises(ConfigError):
            check_gate_values({"map50": value})
    check_gate_values({"map50": 0.0, "top1": 1.0})


# --- duplicated images ---------------------------------------------------------------------


def test_duplicate_image_in_jsonl_is_an_error_naming_both_lines(cli, tmp_path):
    gt = write_gt(tmp_path)
    cases = {  # lines -> (first line, duplicate line)
        "same": (["val/a.jpg", "val/b.jpg", "val/a.jpg"], 1, 3),
        "absolute": (["val/b.jpg", "/data/elsewhere/val/b.jpg"], 1, 2),
        "bare": (["val/sub/c.jpg", "val/a.jpg", "c.jpg"], 1, 3),
        "empty_repeat": (["val/a.jpg", "val/b.jpg", "val/sub/c.jpg", "val/b.jpg"], 2, 4),
    }
    for case, (lines, first, second) in cases.items():
        pred = write_jsonl(tmp_path / f"{case}.jsonl", lines)
        if case == "empty_repeat":  # the repeat has no detections: still a duplicate
            text = pred.read_text().splitlines()
            row = json.loads(text[-1])
            row["detections"] = []
            pred.write_text("\n".join([*text[:-1], json.dumps(row)]) + "\n")
        result = score(cli, gt, pred, tmp_path / f"s_{case}")
        assert result.exit_code == 2, (case, result.output)
        line = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert len(line) == 1, result.output
        assert f"{case}.jsonl" in line[0] and f"line {second}" in line[0]
        assert f"line {first}" in line[0], line[0]
        lenient = score(cli, gt, pred, tmp_path / f"l_{case}", "--lenient")
        metrics = metrics_of(lenient)
        assert "kept line" in lenient.output
        # the first of each image is what is scored
        firsts = list(dict.fromkeys(lines[: second - 1] + lines[second:]))
        alone = write_jsonl(tmp_path / f"{case}_firsts.jsonl", firsts)
        reference = metrics_of(score(cli, gt, alone, tmp_path / f"r_{case}"))
        assert metrics["map"] == pytest.approx(reference["map"], abs=1e-12), case


def test_coco_rows_per_image_are_not_duplicates_but_two_names_for_one_image_are(cli, tmp_path):
    gt = write_gt(tmp_path)
    right = {n: i for i, n in GT_IMAGES}
    # many rows for one image (the normal case), by id and by file name
    rows = coco_rows(right) + coco_rows(right)
    assert metrics_of(score(cli, gt, write_json(tmp_path / "rows.json", rows), tmp_path / "r"))
    names = {n: n for _, n in GT_IMAGES}
    positional = {"val/a.jpg": 1, "val/b.jpg": 2, "val/sub/c.jpg": 3}
    rows = coco_rows(positional, names=names)
    rows.append(dict(rows[0], file_name="a.jpg", image_id=4))  # another name for val/a.jpg
    result = score(cli, gt, write_json(tmp_path / "two.json", rows), tmp_path / "t")
    assert result.exit_code == 2
    assert "entry 6" in result.output and "entry 1" in result.output
    lenient = score(cli, gt, write_json(tmp_path / "two.json", rows), tmp_path / "tl", "--lenient")
    assert lenient.exit_code == 0 and "kept entry 1" in lenient.output


# --- enumerated options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["models", "--task", "segment"], ["detect", "classify"]),
        (["models", "--task", "Detect"], ["detect", "classify"]),
        (["data", "synth", "--format", "xyz", "--n", "2"], ["coco", "voc", "yolo"]),
        (["data", "synth", "--task", "segment", "--n", "2"], ["detect", "classify"]),
        (["data", "synth", "--task", "classify", "--kind", "xyz", "--n", "2"], ["digits"]),
        (["data", "synth", "--kind", "digits", "--n", "2"], ["classify"]),
        (["data", "synth", "--task", "classify", "--format", "voc", "--n", "2"], ["detect"]),
        (["data", "convert", "{gt}", "--to", "xyz", "--out", "{tmp}/cv"], ["coco", "voc"]),
        (["data", "stats", "{gt}", "--format", "xyz"], ["coco", "voc"]),
        (["eval", "--data", "{gt}", "--pred", "{gt}", "--device", "tpu"], ["cpu", "cuda"]),
    ],
)
def test_unknown_choice_is_one_line_naming_the_choices(cli, tmp_path, args, names):
    gt = write_gt(tmp_path)
    args = [a.format(gt=gt, tmp=tmp_path) for a in args]
    if args[:2] == ["data", "synth"]:
        args += ["--out", str(tmp_path / "synth")]
    result = cli(*args)
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], errors[0]
    assert not (tmp_path / "synth").exists() or not any((tmp_path / "synth").iterdir())


def test_models_task_filters(cli):
    for task in ("detect", "classify"):
        result = cli("models", "--task", task, "--json")
        assert result.exit_code == 0
        rows = json.loads(result.stdout)
        assert rows and {r["task"] for r in rows} == {task}


@pytest.mark.parametrize("content", ["", "[]\n"])
def test_an_empty_predictions_file_is_said_not_scored_silently(cli, tmp_path, content):
    from tests.test_eval_cli import write_gt

    gt = write_gt(tmp_path)
    pred = tmp_path / "pred.json"
    pred.write_text(content)
    result = cli("eval", "--data", gt, "--pred", pred, "--no-plots", "--out", tmp_path / "o")
    assert result.exit_code == 0
    assert "holds no results at all: every score is 0" in result.output


def test_confusion_and_pictures_use_the_models_own_threshold():
    """`eval --model shapes-tinyssd` draws its confusion matrix at the model's tuned conf, as
    `detect` would keep boxes; --conf still wins; a predictions file has no model: 0.25."""
    from visiontool.engine.evaluate.inputs import ModelRun
    from visiontool.engine.evaluate.run import DETECTION_CONF, EvalConfig, shown_conf

    run = ModelRun(model="shapes-tinyssd", weights="DEFAULT", device="cpu")
    own = run.load().info.conf
    assert own is not None and own != DETECTION_CONF
    assert shown_conf(EvalConfig(data="d", model="shapes-tinyssd"), run) == own
    assert shown_conf(EvalConfig(data="d", model="shapes-tinyssd", conf=0.6), run) == 0.6
    assert shown_conf(EvalConfig(data="d", pred="p.jsonl"), None) == DETECTION_CONF


def test_a_corrupt_image_met_in_a_loader_worker_is_one_line(cli, tmp_path):
    """torch re-raises a worker's error with the worker's whole traceback as its message:
    `error:` was followed by a dozen traceback lines."""
    from visiontool.data.synth import synth_detection

    data = tmp_path / "data"
    synth_detection(data, n=12, imgsz=96, seed=2)
    bad = sorted((data / "images" / "val").iterdir())[0]
    bad.write_text("garbage")
    result = cli("eval", "--data", data, "--model", "shapes-tinyssd", "--device", "cpu",
                 "--workers", "1", "--out", tmp_path / "ev")  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert lines[-1] == f"error: {bad}: not an image (unrecognised format)", result.output


def test_a_class_id_that_contradicts_its_label_is_warned_and_the_label_wins(cli, tmp_path):
    gt = write_gt(tmp_path)
    images = ["val/a.jpg", "val/b.jpg", "val/sub/c.jpg"]
    truthful = metrics_of(
        score(cli, gt, write_jsonl(tmp_path / "ok.jsonl", images), tmp_path / "a")
    )
    pred = write_jsonl(tmp_path / "p.jsonl", images)
    lines = pred.read_text().splitlines()
    first = json.loads(lines[0])
    first["detections"][0]["class_id"] = 1  # says dog, labelled cat
    pred.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = score(cli, gt, pred, tmp_path / "b")
    assert "line 1: 1 prediction(s) whose class_id is not the data set's index" in result.output
    assert metrics_of(result)["map"] == truthful["map"]  # scored by the label
    assert "whose class_id" not in score(cli, gt, write_jsonl(tmp_path / "c.jsonl", images),
                                         tmp_path / "c").output  # fmt: skip
