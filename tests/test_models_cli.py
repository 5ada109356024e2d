"""`visiontool models`: which weights work offline (shipped, cached in torch's hub cache, to
download, none), in the table and in --json, without torch; tables that fit 80 columns."""

from __future__ import annotations

import json
import sys

import pytest

from visiontool.models.zoo import CLASSIFIERS, DETECTORS, zoo_entry

ZOO = (*DETECTORS, *CLASSIFIERS)


@pytest.fixture
def torch_home(monkeypatch, tmp_path):
    """A private torch cache holding resnet18's weight file (an empty stand-in: only its name
    counts for listing)."""
    home = tmp_path / "th"
    monkeypatch.setenv("TORCH_HOME", str(home))
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / zoo_entry("resnet18").weights_file).write_bytes(b"")
    return checkpoints


def _rows(cli, *args):
    result = cli("models", "--json", *args)
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_json_says_which_weights_work_offline(cli, torch_home):
    rows = _rows(cli)
    cached, download = rows["resnet18"], rows["frcnn"]
    assert cached["availability"] == "cached" and cached["offline"] is True
    assert cached["weights_path"] == str(torch_home / zoo_entry("resnet18").weights_file)
    assert cached["download_mb"] is None
    assert download["availability"] == "download" and download["offline"] is False
    assert download["download_mb"] == pytest.approx(160, abs=1)
    assert download["weights_url"].startswith("https://download.pytorch.org/models/")
    assert download["weights_path"].startswith(str(torch_home))
    for name in ("shapes-frcnn", "digits-lenet"):
        assert rows[name]["availability"] == "shipped" and rows[name]["offline"] is True
    assert rows["lenet"]["availability"] == "none" and rows["lenet"]["offline"] is None
    assert {r["availability"] for r in rows.values()} == {"cached", "download", "shipped", "none"}


def test_table_weights_column_and_legend(cli, torch_home, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    result = cli("models")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert " cached " in lines["resnet18"]
    assert (
        " download 160 MB " in lines["frcnn"] and " download 10 MB " in lines["mobilenet_v3_small"]
    )
    assert " shipped " in lines["shapes-frcnn"]
    assert lines["lenet"].split()[4:6] == ["32", "-"]  # per data set, input 32, no weights
    assert f"torch's cache: {torch_home}" in result.output


def test_a_shipped_file_that_is_gone_is_not_offline(cli, monkeypatch, tmp_path):
    from visiontool.models.shipped import WEIGHTS_ENV

    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # read at listing time, not at import
    rows = _rows(cli)
    assert rows["shapes-frcnn"]["availability"] == "missing"
    assert rows["shapes-frcnn"]["offline"] is False


def test_the_cache_folder_is_torch_hubs_without_importing_torch(monkeypatch, tmp_path):
    """Listing finds torch's cache from the environment as torch.hub does, with torch.hub not
    imported; once it is, torch.hub itself answers (it may have been moved by set_dir)."""
    import torch.hub

    from visiontool.io.weights import cache_dir

    for env in ({"TORCH_HOME": str(tmp_path / "t")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {}):
        for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        expected = torch.hub.get_dir() + "/checkpoints"
        assert str(cache_dir()) == expected
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch.hub")
            assert str(cache_dir()) == expected


def test_zoo_weight_files_are_torchvisions_defaults():
    """The file names and sizes listed without torchvision are those its DEFAULT enums name."""
    from visiontool.models.zoo import weights_enum

    for spec in ZOO:
        enum = weights_enum(spec)
        assert enum.url.endswith("/" + spec.weights_file), spec.name
        assert spec.weights_mb == pytest.approx(enum.meta["_file_size"], abs=0.1), spec.name


def _models_table(cli, monkeypatch, columns: int, *args: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli("models", *args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


@pytest.mark.parametrize("columns", [80, 120])
def test_models_table_fits_the_terminal_one_line_per_model(cli, monkeypatch, columns):
    from visiontool.models.catalog import list_models

    lines = _models_table(cli, monkeypatch, columns)
    cache_line = [line for line in lines if line.strip().startswith("torch's cache:")]
    assert len(cache_line) == 1  # the one line whose length is the path's
    assert all(len(line) <= columns for line in lines if line not in cache_line), lines
    names = [row["name"] for row in list_models()]
    table = [line for line in lines if line.split() and line.split()[0] in names]
    assert sorted(line.split()[0] for line in table) == sorted(names)  # one line each
    described = {line.split()[0]: line for line in table}
    assert ("input" in lines[1]) == (columns >= 100)
    long_one = "Faster R-CNN, MobileNetV3-Large FPN at 320 px (fast on CPU)"
    if columns >= 120:
        assert long_one in described["frcnn-mobile-320"]
    else:
        assert described["frcnn-mobile-320"].rstrip().endswith("…")


def test_piped_listing_keeps_whole_lines(cli, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    result = cli("models")  # CliRunner's stdout is not a terminal
    assert "…" not in result.output
    assert "Faster R-CNN, MobileNetV3-Large FPN at 320 px (fast on CPU)" in result.output


@pytest.mark.parametrize("columns", [80, 120])
def test_heads_table_fits_the_terminal(cli, monkeypatch, columns):
    from visiontool.models.catalog import list_heads

    lines = _models_table(cli, monkeypatch, columns, "--heads")
    assert all(len(line) <= columns for line in lines), lines
    heads = [h["name"] for h in list_heads()]
    table = lines[: lines.index("backbones")]
    starts = [i for i, line in enumerate(table) if line.split() and line.split()[0] in heads
              and "takes only" not in line and "--arch options" not in line]  # fmt: skip
    assert len(starts) == len(heads)
    ends = [*starts[1:], next(i for i, line in enumerate(table) if "takes only" in line)]
    assert all(end - start <= 3 for start, end in zip(starts, ends, strict=True))  # <= 3 lines
    assert "ssdlite takes only these backbones: mobilenet_v3_large" in "\n".join(lines)
