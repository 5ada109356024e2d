"""Issue 11, rule 1: nothing is read or written outside the data set or `--out`, and `data
check` reports (as errors) exactly what `convert`/`train` refuse. Also bounded parsing.

Every hostile data set is built next to a "victim" folder holding a file that must never be read
into, overwritten or joined by new files; then `data check` must fail with a line naming the
entry, and `data convert` must exit 2 with one `error:` line and write nothing outside `--out`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from visiontool.data.datasets import open_dataset
from visiontool.errors import DataError

VICTIM = b"precious user file"


def _png(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (shade, 80, 160)).save(path)
    return path


def _victim(tmp: Path) -> Path:
    """A folder outside the data set with an image-looking file in it."""
    folder = tmp / "victim"
    folder.mkdir()
    (folder / "a.png").write_bytes(VICTIM)
    _png(folder / "real.png", 200)  # a real image: reading it would succeed silently
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------- hostile builders
# Each builds a data set under tmp/"ds" (the victim folder exists already) and returns
# (data set path, target format for convert, a fragment the error must name).


def csv_label_abs(tmp: Path) -> tuple[Path, str, str]:
    ds = tmp / "ds"
    _png(ds / "a.png"), _png(ds / "b.png")
    (ds / "train.csv").write_text(f"filename,label\na.png,cat\nb.png,{tmp / 'victim'}\n")
    return ds, "imagefolder", "train.csv:3"


def _csv_label(label: str) -> Callable[[Path], tuple[Path, str, str]]:
    def build(tmp: Path) -> tuple[Path, str, str]:
        ds = tmp / "ds"
        _png(ds / "a.png"), _png(ds / "b.png")
        (ds / "train.csv").write_text(f"a.png,cat\nb.png,{label}\n")
        return ds, "imagefolder", "train.csv:2"

    build.__name__ = f"csv_label_{label!r}"
    return build


def _csv_file(label: str, name: Callable[[Path], str]) -> Callable[[Path], tuple[Path, str, str]]:
    def build(tmp: Path) -> tuple[Path, str, str]:
        ds = tmp / "ds"
        _png(ds / "a.png")
        (ds / "train.csv").write_text(f"a.png,cat\n{name(tmp)},dog\n")
        return ds, "imagefolder", "train.csv:2"

    build.__name__ = f"csv_file_{label}"
    return build


def csv_symlink_image(tmp: Path) -> tuple[Path, str, str]:
    ds = tmp / "ds"
    _png(ds / "a.png")
    os.symlink(tmp / "victim" / "real.png", ds / "b.png")
    (ds / "train.csv").write_text("a.png,cat\nb.png,dog\n")
    return ds, "csv", "train.csv:2"


def _coco(tmp: Path, file_names: list[object], categories: object = None) -> Path:
    ds = tmp / "ds"
    _png(ds / "images" / "ok.png")
    images = [{"id": 1, "file_name": "ok.png", "width": 16, "height": 12}]
    images += [
        {"id": k, "file_name": name, "width": 16, "height": 12}
        for k, name in enumerate(file_names, start=2)
    ]
    anns = [
        {"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 5, 5]}
        for k in range(1, len(images) + 1)
    ]
    cats = categories if categories is not None else [{"id": 1, "name": "thing"}]
    (ds / "annotations").mkdir(parents=True)
    data = {"images": images, "annotations": anns, "categories": cats}
    (ds / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return ds


def _coco_name(
    label: str, name: Callable[[Path], object]
) -> Callable[[Path], tuple[Path, str, str]]:
    def build(tmp: Path) -> tuple[Path, str, str]:
        return _coco(tmp, [name(tmp)]), "yolo", "image"

    build.__name__ = f"coco_file_name_{label}"
    return build


def coco_symlinked_dir(tmp: Path) -> tuple[Path, str, str]:
    ds = _coco(tmp, ["link/real.png"])
    os.symlink(tmp / "victim", ds / "images" / "link")
    return ds, "voc", "symlink"


def coco_category_newline(tmp: Path) -> tuple[Path, str, str]:
    cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "a\nb"}]
    return _coco(tmp, [], categories=cats), "voc", "categories[1]"


def coco_category_empty(tmp: Path) -> tuple[Path, str, str]:
    cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": ""}]
    return _coco(tmp, [], categories=cats), "yolo", "categories[1]"


def _voc(tmp: Path, ids: list[str], filename: str = "x.png") -> Path:
    ds = tmp / "ds"
    _png(ds / "JPEGImages" / "x.png")
    (ds / "Annotations").mkdir(parents=True)
    xml = (
        f"<annotation><filename>{filename}</filename><size><width>16</width>"
        "<height>12</height></size><object><name>thing</name><bndbox><xmin>2</xmin>"
        "<ymin>2</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object></annotation>"
    )
    (ds / "Annotations" / "x.xml").write_text(xml)
    (ds / "ImageSets" / "Main").mkdir(parents=True)
    (ds / "ImageSets" / "Main" / "train.txt").write_text("\n".join(["x", *ids]) + "\n")
    return ds


def voc_imageset_escape(tmp: Path) -> tuple[Path, str, str]:
    ds = _voc(tmp, ["../../victim/evil"])
    # an annotation planted outside the data set: reading it would be a read outside
    (tmp / "victim" / "evil.xml").write_text((ds / "Annotations" / "x.xml").read_text())
    return ds, "coco", "train.txt:2"


def voc_filename_escape(tmp: Path) -> tuple[Path, str, str]:
    return _voc(tmp, [], filename="../../victim/real.png"), "yolo", "x.xml"


def voc_filename_absolute(tmp: Path) -> tuple[Path, str, str]:
    return _voc(tmp, [], filename=str(tmp / "victim" / "real.png")), "coco", "x.xml"


def voc_symlinked_xml(tmp: Path) -> tuple[Path, str, str]:
    ds = _voc(tmp, ["y"])
    (tmp / "victim" / "y.xml").write_text((ds / "Annotations" / "x.xml").read_text())
    os.symlink(tmp / "victim" / "y.xml", ds / "Annotations" / "y.xml")
    return ds, "coco", "train.txt:2"


def _yolo(tmp: Path) -> Path:
    ds = tmp / "ds"
    _png(ds / "images" / "train" / "x.png")
    (ds / "labels" / "train").mkdir(parents=True)
    (ds / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return ds


def yolo_yaml_split_escape(tmp: Path) -> tuple[Path, str, str]:
    ds = _yolo(tmp)
    (ds / "data.yaml").write_text("path: .\ntrain: ../victim\nnames: [thing]\n")
    return ds, "coco", "'train'"


def yolo_yaml_split_absolute(tmp: Path) -> tuple[Path, str, str]:
    ds = _yolo(tmp)
    (ds / "data.yaml").write_text(f"train: {tmp / 'victim'}\nnames: [thing]\n")
    return ds, "coco", "'train'"


def yolo_yaml_list_escape(tmp: Path) -> tuple[Path, str, str]:
    ds = _yolo(tmp)
    (ds / "data.yaml").write_text("train: [images/train, ../victim]\nnames: [thing]\n")
    return ds, "coco", "entry 1"


def _yolo_list_line(
    label: str, line: Callable[[Path], str]
) -> Callable[[Path], tuple[Path, str, str]]:
    def build(tmp: Path) -> tuple[Path, str, str]:
        ds = _yolo(tmp)
        (ds / "train.txt").write_text(f"images/train/x.png\n{line(tmp)}\n")
        (ds / "data.yaml").write_text("train: train.txt\nnames: [thing]\n")
        return ds, "coco", "train.txt:2"

    build.__name__ = f"yolo_list_{label}"
    return build


def yolo_symlinked_label(tmp: Path) -> tuple[Path, str, str]:
    ds = _yolo(tmp)
    (tmp / "victim" / "secret.txt").write_text("SECRET-root:x:0:0\n")
    (ds / "labels" / "train" / "x.txt").unlink()
    os.symlink(tmp / "victim" / "secret.txt", ds / "labels" / "train" / "x.txt")
    (ds / "data.yaml").write_text("train: images/train\nnames: [thing]\n")
    return ds, "coco", "x.txt"


def yolo_symlinked_image(tmp: Path) -> tuple[Path, str, str]:
    ds = _yolo(tmp)
    os.symlink(tmp / "victim" / "real.png", ds / "images" / "train" / "y.png")
    return ds, "voc", "y.png"


def imagefolder_symlinked_class(tmp: Path) -> tuple[Path, str, str]:
    ds = tmp / "ds"
    _png(ds / "train" / "cat" / "a.png")
    os.symlink(tmp / "victim", ds / "train" / "dog")
    return ds, "csv", "real.png"


HOSTILE = [
    csv_label_abs,
    *(
        _csv_label(label)
        for label in ("../../x", "/abs/path", "..", "a/b", "a\\b", "C:evil", "x\x01y")
    ),
    _csv_file("dotdot", lambda t: "../victim/real.png"),
    _csv_file("absolute", lambda t: str(t / "victim" / "real.png")),
    _csv_file("folded", lambda t: "sub/../../victim/real.png"),
    _csv_file("images_dotdot", lambda t: "images/../../victim/real.png"),
    csv_symlink_image,
    _coco_name("dotdot", lambda t: "../victim/real.png"),
    _coco_name("dotdot2", lambda t: "../../victim/real.png"),
    _coco_name("absolute", lambda t: str(t / "victim" / "real.png")),
    _coco_name("nul", lambda t: "a\x00b.png"),
    _coco_name("int", lambda t: 123),
    _coco_name("list", lambda t: ["x.png"]),
    coco_symlinked_dir,
    coco_category_newline,
    coco_category_empty,
    voc_imageset_escape,
    voc_filename_escape,
    voc_filename_absolute,
    voc_symlinked_xml,
    yolo_yaml_split_escape,
    yolo_yaml_split_absolute,
    yolo_yaml_list_escape,
    _yolo_list_line("dotdot", lambda t: "../victim/real.png"),
    _yolo_list_line("absolute", lambda t: str(t / "victim" / "real.png")),
    _yolo_list_line("images_dotdot", lambda t: "images/../../victim/real.png"),
    yolo_symlinked_label,
    yolo_symlinked_image,
    imagefolder_symlinked_class,
]


@pytest.mark.parametrize("build", HOSTILE, ids=lambda b: getattr(b, "__name__", "case"))
def test_check_reports_what_convert_refuses_and_nothing_leaves_the_data_set(
    cli, tmp_path: Path, build: Callable[[Path], tuple[Path, str, str]]
) -> None:
    victim = _victim(tmp_path)
    ds, to, fragment = build(tmp_path)
    before = _snapshot(victim)

    check = cli("data", "check", ds, "--max-issues", "0")
    assert check.exit_code in (1, 2), check.output
    assert "Traceback" not in check.output
    assert "SECRET" not in check.output  # no content of a file outside leaks into messages
    errors = [line for line in check.output.splitlines() if line.startswith("error:")]
    assert errors and any(fragment in line for line in errors), check.output

    out = tmp_path / "out"
    convert = cli("data", "convert", ds, "--to", to, "--out", out)
    assert convert.exit_code == 2, convert.output
    lines = [line for line in convert.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), convert.output

    assert _snapshot(victim) == before  # nothing overwritten, nothing added
    outside = {p.name for p in tmp_path.iterdir()} - {"victim", "ds", "out"}
    assert not outside, outside
    with pytest.raises(DataError):  # train reads through the same strict open
        open_dataset(ds, split="train")


def test_clean_sets_pass_check_and_convert(cli, tmp_path: Path) -> None:
    """The same layouts without the hostile entry: check ok, convert works (so the rule does
    not refuse good data: absolute paths inside the root, a YAML root outside its folder, a
    split list, a data set that is itself reached through a symlink)."""
    victim = _victim(tmp_path)
    ds = _yolo(tmp_path)
    _png(ds / "images" / "extra" / "y.png")
    (ds / "train.txt").write_text(f"images/train/x.png\n{ds / 'images' / 'extra' / 'y.png'}\n")
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    cases = [
        (ds / "data.yaml", "train: images/train\nval: train.txt\nnames: [thing]\n", 1, 2),
        (spec_dir / "abs.yaml", f"path: {ds}\ntrain: images/train\nnames: [thing]\n", 1, None),
        (spec_dir / "rel.yaml", "path: ../ds\ntrain: [images/train, images/extra]\n", 2, None),
    ]
    for spec, text, n_train, n_val in cases:
        spec.write_text(text)
        check = cli("data", "check", spec)
        assert check.exit_code == 0 and "ok:" in check.output, (text, check.output)
        assert len(open_dataset(spec, split="train")) == n_train
        if n_val:
            assert len(open_dataset(spec, split="val")) == n_val
    os.symlink(ds, tmp_path / "linked_ds")
    for k, src in enumerate((ds, tmp_path / "linked_ds")):
        out = tmp_path / f"out{k}"
        result = cli("data", "convert", src, "--to", "coco", "--out", out)
        assert result.exit_code == 0, result.output
    # a CSV with odd but safe labels and an absolute path inside its folder
    csv_ds = tmp_path / "csvds"
    _png(csv_ds / "a.png"), _png(csv_ds / "images" / "b.png")
    (csv_ds / "train.csv").write_text(f"{csv_ds / 'a.png'},chat noir\nb.png,c.d-é\n")
    assert cli("data", "check", csv_ds, "-f", "csv").exit_code == 0
    out = tmp_path / "o"
    result = cli("data", "convert", csv_ds, "-f", "csv", "--to", "imagefolder", "--out", out)
    assert result.exit_code == 0, result.output
    # multi-label rows go under their first label
    assert {p.name for p in (tmp_path / "o" / "train").iterdir()} == {"chat", "c.d-é"}
    assert _snapshot(victim)["a.png"] == VICTIM


def test_link_output_reads_back(cli, tmp_path: Path) -> None:
    """`convert --link` makes hard links, so the new set holds no link out of itself."""
    ds = _yolo(tmp_path)
    out = tmp_path / "linked"
    assert cli("data", "convert", ds, "--to", "coco", "--link", "--out", out).exit_code == 0
    image = next((out / "images").rglob("*.png"))
    assert not image.is_symlink() and os.path.samefile(image, ds / "images" / "train" / "x.png")
    assert cli("data", "check", out).exit_code == 0


def test_writers_refuse_names_that_leave_out(tmp_path: Path) -> None:
    """Writers called directly (the Python API) with hostile class or split names."""
    from visiontool import registry
    from visiontool.data.classification import ClassificationDataset
    from visiontool.data.formats.common import write_names_file

    image = _png(tmp_path / "src" / "a.png")
    writer = registry.get("format", "imagefolder").write
    for split, name in [
        ("train", "../../escaped"),
        ("train", str(tmp_path / "abs")),
        ("train", ".."),
        ("train", "."),
        ("train", ""),
        ("train", "a\\b"),
        ("train", "C:x"),
        ("train", "nul\x00l"),
        ("..", "cat"),
        ("a/b", "cat"),
    ]:
        dataset = ClassificationDataset([(image, 0)], [name], root=tmp_path / "src")
        out = tmp_path / "out"
        with pytest.raises(DataError, match="cannot name a folder"):
            writer({split: dataset}, out, transfer="copy")
        assert not out.exists() or not any(out.rglob("*.png"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == ["src"]
    for names in (["a", "b\nc"], ["a", ""], ["a", "b\rc"]):
        with pytest.raises(DataError, match="class name"):
            write_names_file(tmp_path / "classes.txt", names)


# ---------------------------------------------------------------------------- bounded parsing

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
train: *i
val: *i
names: *i
"""


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("laughs.yaml", BILLION_LAUGHS, "aliases"),
        ("alias.yaml", "x: &p images\ntrain: *p\n", "aliases"),
        ("tag.yaml", "train: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
        ("deep.yaml", "train: " + "[" * 100_000 + "]" * 100_000 + "\n", "data spec"),
        ("deep.json", '{"train": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
def test_data_specs_are_parsed_with_bounds(
    cli, tmp_path: Path, name: str, text: str, fragment: str
) -> None:
    spec = tmp_path / name
    spec.write_text(text)
    for command in (("data", "check", spec), ("data", "stats", spec)):
        start = time.monotonic()
        result = cli(*command)
        assert time.monotonic() - start < 5
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert fragment in lines[0] and name in lines[0]


def test_deep_json_and_size_cap_are_one_line_errors(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "deep"
    (deep / "annotations").mkdir(parents=True)
    (deep / "annotations" / "instances_train.json").write_text(
        '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    result = cli("data", "check", deep)
    assert result.exit_code == 1 and "nested too deeply" in result.output, result.output
    result = cli("data", "convert", deep, "--to", "yolo", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "nested too deeply" in result.output
    assert "Traceback" not in result.output

    # the cap (VISIONTOOL_MAX_FILE_MB) on every annotation file read whole
    monkeypatch.setenv("VISIONTOOL_MAX_FILE_MB", "0.001")  # about 1 KB
    big = _coco(tmp_path, [f"pad{'x' * 40}{k}.png" for k in range(40)])
    csv_ds = tmp_path / "csvbig"
    _png(csv_ds / "a.png")
    (csv_ds / "train.csv").write_text("a.png,cat\n" * 200)
    voc = tmp_path / "vocbig"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "Annotations" / "x.xml").write_text("<annotation>" + " " * 5000 + "</annotation>")
    yolo = tmp_path / "yolobig"
    _png(yolo / "images" / "train" / "x.png")
    (yolo / "labels" / "train").mkdir(parents=True)
    (yolo / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 0.2 0.2\n" * 200)
    for ds in (big, csv_ds, voc, yolo):
        result = cli("data", "check", ds)
        assert result.exit_code in (1, 2), result.output
        assert "VISIONTOOL_MAX_FILE_MB" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("VISIONTOOL_MAX_FILE_MB", "50")
    assert cli("data", "check", yolo).exit_code == 0
