"""CLI contract: lazy imports, --version, python -m, `models` listing and nearest-name errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from visiontool import __version__, registry
from visiontool.errors import UnknownName

LAZY_CHECK = """
import sys
from visiontool.cli.main import run
try:
    run({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "torchvision", "cv2", "matplotlib") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["models", "--json"],
        ["models"],
        ["models", "--heads"],
        ["detect", "-h"],
    ],  # fmt: skip
)
def test_commands_without_a_model_do_not_import_torch(argv):
    code = LAZY_CHECK.format(argv=argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("HEAVY="), out.stdout[-300:]


def test_run_moves_live_objects_out_of_the_exit_collection():
    """Interpreter exit would otherwise walk every object torch created (~0.7 s per command)."""
    code = (
        "import gc\nfrom visiontool.cli.main import run\n"
        "try:\n    run(['--version'])\nexcept SystemExit:\n    pass\n"
        "print('FROZEN=%d' % gc.get_freeze_count())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().rsplit("FROZEN=", 1)[1]) > 1000


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "visiontool", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"visiontool {__version__}"


def test_models_json_lists_the_zoo(cli):
    result = cli("models", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    expected = {
        "frcnn",
        "frcnn-v2",
        "frcnn-mobile",
        "frcnn-mobile-320",
        "retinanet",
        "retinanet-v2",
        "ssd",
        "ssdlite",
        "fcos",
        "resnet18",
        "resnet34",
        "resnet50",
        "vgg11",
        "vgg16",
        "googlenet",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
    }
    assert expected <= set(rows)
    for row in rows.values():
        assert {"name", "aliases", "task", "weights", "classes", "input_size"} <= set(row)
    assert rows["frcnn"]["task"] == "detect" and len(rows["frcnn"]["classes"]) == 80
    assert rows["frcnn"]["classes"][0] == "person" and rows["ssd"]["input_size"] == 300
    assert rows["resnet18"]["task"] == "classify" and len(rows["resnet18"]["classes"]) == 1000
    table = cli("models", "--task", "classify")
    assert table.exit_code == 0 and "resnet50" in table.output and "frcnn-v2" not in table.output


def test_aliases_resolve_and_unknown_names_suggest():
    assert registry.get("model", "fasterrcnn_resnet50_fpn").name == "frcnn"
    with pytest.raises(UnknownName, match="did you mean 'retinanet'"):
        registry.get("model", "retinanett")


def test_duplicate_registration_is_rejected():
    registry.get("model", "frcnn")
    with pytest.raises(ValueError, match="already registered"):
        registry.add("model", registry.get("model", "frcnn"))


def test_errors_are_one_line_without_traceback(cli, tmp_path):
    result = cli("detect", tmp_path / "missing", "--model", "frcnn", "--weights", "none")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
