"""What `visiontool detect` prints: the per-image line, unsupported sources, the speed line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import noise_image, save
from visiontool.cli.detect import count_labels, describe, plural
from visiontool.results import Detection, ImageResult

MODEL = ["--model", "frcnn-mobile-320", "--weights", "none", "--workers", "0", "--seed", "0"]


@pytest.mark.parametrize(
    ("word", "n", "expected"),
    [
        ("circle", 1, "circle"),
        ("circle", 2, "circles"),
        ("cross", 2, "crosses"),
        ("box", 3, "boxes"),
        ("couch", 2, "couches"),
        ("brush", 2, "brushes"),
        ("person", 1, "person"),
        ("person", 2, "people"),
        ("sheep", 4, "sheep"),
        ("traffic light", 2, "traffic lights"),
        ("wine glass", 2, "wine glasses"),
        ("circle", 0, "circles"),
    ],
)
def test_plurals(word, n, expected):
    assert plural(word, n) == expected


def test_counts_most_frequent_first_then_by_name():
    labels = ["circle", "triangle", "star", "triangle", "triangle", "cross", "triangle", "star"]
    assert count_labels(labels) == "4 triangles, 2 stars, 1 circle, 1 cross"
    assert count_labels([]) == ""


def test_describe_detection_line():
    dets = [
        Detection(box=(0.0, 0.0, 1.0, 1.0), score=0.9, class_id=c, label=name)
        for c, name in [(1, "triangle")] * 4 + [(0, "circle")]
    ]
    result = ImageResult(image="a/b.jpg", rel="b.jpg", width=320, height=240, detections=dets,
                         speed={"decode": 5.0, "inference": 40.1})  # fmt: skip
    assert describe(result) == "a/b.jpg: 320x240 4 triangles, 1 circle, 45.1ms"
    empty = ImageResult(image="c.jpg", rel="c.jpg", width=64, height=48, detections=[])
    assert describe(empty) == "c.jpg: 64x48 (no detections), 0.0ms"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console")
    save(noise_image(160, 120, seed=1), root / "a.jpg")
    save(noise_image(100, 80, seed=2), root / "b.png")
    return root


LINE = re.compile(r"^image (\d+)(/\d+)? (\S+): (\d+)x(\d+) (.+), (\d+\.\d)ms$")


def _lines(output: str) -> list[re.Match]:
    return [m for line in output.splitlines() if (m := LINE.match(line))]


def test_folder_lines_have_index_of_total_and_width_x_height(cli, folder, tmp_path):
    result = cli("detect", folder, *MODEL, "--conf", "0", "--max-det", "3", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert [(m[1], m[2], Path(m[3]).name) for m in lines] == [
        ("1", "/2", "a.jpg"),
        ("2", "/2", "b.png"),
    ]
    assert [(m[4], m[5]) for m in lines] == [("160", "120"), ("100", "80")]
    for m in lines:  # "3 persons" never: counts are real plurals, most frequent first
        counts = [part.split(" ", 1) for part in m[6].split(", ")]
        numbers = [int(n) for n, _ in counts]
        assert sum(numbers) == 3 and numbers == sorted(numbers, reverse=True)
        assert all(plural(name, int(n)) == name for n, name in counts if n == "1")
    assert "Speed per image:" in result.output


def test_stdin_lines_have_just_the_index(cli, folder, tmp_path):
    paths = f"{folder / 'a.jpg'}\n{folder / 'b.png'}\n"
    result = cli("detect", "-", *MODEL, "--out", tmp_path / "o", input=paths)
    assert result.exit_code == 0, result.output
    assert [(m[1], m[2]) for m in _lines(result.output)] == [("1", None), ("2", None)]


@pytest.mark.parametrize("source", ["clip.mp4", "CLIP.MOV"])
def test_an_unreadable_video_is_a_failed_input_not_a_missing_file(cli, tmp_path, monkeypatch,
                                                                  source):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / source).write_bytes(b"\x00" * 64)
    result = cli("detect", source, *MODEL, "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert f"cannot open video {source}" in result.output
    assert "no such file" not in result.output and "not an image" not in result.output


def test_a_run_that_processed_nothing_prints_no_speed_line(cli, tmp_path):
    bad = tmp_path / "in" / "bad.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not a jpeg")
    result = cli("detect", bad, *MODEL, "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    assert "image 1/1" in result.output and "FAILED" in result.output
    assert "Speed per image" not in result.output
