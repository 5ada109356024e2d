"""One convention for options: every list option takes commas and repeated flags (numbers also
several after one flag), garbage is one line and exit 2; every option has help; flags show no
value type."""

from __future__ import annotations

import pytest
import typer

from visiontool.cli.main import app

# (command path, option, a value written three ways -> the parsed value), one row per list option
LIST_OPTIONS = [
    (["detect"], "--classes", ["circle", "star"], ["circle", "star"]),
    (["train"], "--returned-layers", ["1", "2", "3", "5"], [1, 2, 3, 5]),
    (["train"], "--anchor-sizes", ["32", "64", "128"], [32.0, 64.0, 128.0]),
    (["train"], "--anchor-ratios", ["1", "2", "0.5"], [1.0, 2.0, 0.5]),
    (["eval"], "--iou-thresholds", ["0.5", "0.75"], [0.5, 0.75]),
    (["eval"], "--fail-under", ["map50=0.5", "map=0.3"], [("map50", 0.5), ("map", 0.3)]),
    (["anchors", "prior"], "--sizes", ["0.75", "0.5"], [0.75, 0.5]),
    (["anchors", "prior"], "--ratios", ["1", "2", "0.5"], [1.0, 2.0, 0.5]),
    (["anchors", "grid"], "--scales", ["8", "16"], [8.0, 16.0]),
    (["anchors", "grid"], "--ratios", ["1", "2", "0.5"], [1.0, 2.0, 0.5]),
    (["anchors", "label"], "--sizes", ["0.75", "0.5"], [0.75, 0.5]),
    (["anchors", "label"], "--ratios", ["1", "2", "0.5"], [1.0, 2.0, 0.5]),
]
REQUIRED = {  # options a command needs before it parses at all
    ("eval",): ["--data", "d"],
    ("anchors", "prior"): ["--sizes", "0.5", "--ratios", "1"],
    ("anchors", "label"): ["--gt", "gt.json"],
}
IDS = [" ".join([*path, option]) for path, option, _, _ in LIST_OPTIONS]


def _command(path: list[str]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _parse(path: list[str], args: list[str]) -> dict:
    """Parse (and run the option callbacks) without running the command."""
    command = _command(path)
    required = REQUIRED.get(tuple(path), [])
    pairs = dict(zip(required[::2], required[1::2], strict=True))
    extra = [x for k, v in pairs.items() if k not in args for x in (k, v)]
    ctx = command.make_context(" ".join(path), [*args, *extra])
    return ctx.params


def _name(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


@pytest.mark.parametrize(("path", "option", "values", "expected"), LIST_OPTIONS, ids=IDS)
def test_list_option_takes_commas_and_repeated_flags(path, option, values, expected):
    name = _name(option)
    commas = _parse(path, [option, ",".join(values)])[name]
    repeated = _parse(path, [x for v in values for x in (option, v)])[name]
    assert commas == expected
    assert repeated == expected


@pytest.mark.parametrize(
    ("path", "option", "values", "expected"),
    [row for row in LIST_OPTIONS if row[1] not in ("--classes", "--fail-under")],
    ids=[
        i
        for i, row in zip(IDS, LIST_OPTIONS, strict=True)
        if row[1] not in ("--classes", "--fail-under")
    ],
)
def test_numeric_list_option_takes_numbers_after_one_flag(path, option, values, expected):
    assert _parse(path, [option, *values])[_name(option)] == expected


@pytest.mark.parametrize(("path", "option", "values", "expected"), LIST_OPTIONS, ids=IDS)
def test_list_option_refuses_garbage_in_one_line_exit_2(cli, path, option, values, expected):
    garbage = "=" if option == "--fail-under" else ("" if option == "--classes" else "1,x")
    result = cli(*path, option, garbage, *REQUIRED.get(tuple(path), []))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], lines


def test_train_anchor_groups_per_level():
    params = _parse(["train"], ["--anchor-sizes", "32,48;64,96"])
    assert params["anchor_sizes"] == [[32.0, 48.0], [64.0, 96.0]]


def test_eval_threshold_range():
    params = _parse(["eval"], ["--iou-thresholds", "0.5:0.6:0.05"])
    assert params["iou_thresholds"] == [0.5, 0.55, 0.6]


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


ALL = list(_walk(typer.main.get_command(app)))


@pytest.mark.parametrize(
    ("path", "command"), ALL, ids=[" ".join(p) or "visiontool" for p, _ in ALL]
)
def test_every_option_has_help_and_flags_take_no_value_type(path, command):
    ctx = command.make_context(" ".join(path) or "visiontool", [], resilient_parsing=True)
    for param in command.get_params(ctx):
        assert (param.help or "").strip(), f"{' '.join(path)} {param.opts} has no help"
        if getattr(param, "is_flag", False):
            assert not shown_type(param, ctx), f"{param.opts} shows a value type"
        else:
            assert shown_type(param, ctx), f"{param.opts} shows no value type"


def shown_type(param, ctx) -> str:
    """The value type the help screen shows for `param` (typer 0.29 has a method for it;
    before, rich_utils shows the metavar unless it names a bool)."""
    if hasattr(param, "display_type_rich"):
        return param.display_type_rich(ctx)
    metavar = param.make_metavar(ctx=ctx)
    return "" if "bool" in metavar.lower() else metavar


# --- help screens: fit the terminal, one way to show defaults, one wording per option -------

PATHS = [path for path, _ in ALL]


def _help(cli, monkeypatch, path, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "visiontool" for p in PATHS])
def test_help_fits_the_terminal_and_shows_defaults_one_way(cli, monkeypatch, path, columns):
    text = _help(cli, monkeypatch, path, columns)
    assert all(len(line) <= columns for line in text.splitlines())
    flat = " ".join(text.replace("│", " ").split())  # rich may wrap anywhere
    assert "[default: (" not in flat  # defaults in words read like values: [default: words]
    assert "…" not in text  # nothing cut short


def test_top_level_help_lists_each_command_on_one_line_at_80_columns(cli, monkeypatch):
    text = _help(cli, monkeypatch, [], 80)
    commands = typer.main.get_command(app).commands
    rows = [line for line in text.splitlines() if line[2:].split()[:1] in ([n] for n in commands)]
    assert len(rows) == len(commands)
    panel = text[text.index("Commands") :].splitlines()[1 : len(commands) + 1]
    assert panel == rows  # no continuation lines between them


def _option_help(path: list[str], option: str) -> str:
    command = _command(path)
    ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
    (param,) = [p for p in command.get_params(ctx) if option in p.opts]
    return param.help


@pytest.mark.parametrize(
    ("option", "paths"),
    [
        ("--model", [["detect"], ["eval"], ["benchmark"]]),
        ("--weights", [["detect"], ["eval"]]),
        ("--workers", [["detect"], ["eval"], ["benchmark"]]),
        ("--half", [["detect"], ["eval"]]),
        ("--imgsz", [["detect"], ["eval"]]),
        ("--device", [["detect"], ["eval"], ["train"], ["anchors", "check"]]),
        ("--out", [["detect"], ["eval"], ["data", "synth"], ["anchors", "prior"]]),
        ("--format", [["data", "check"], ["data", "show"], ["data", "stats"]]),
    ],
)
def test_the_same_option_reads_the_same_in_every_command(option, paths):
    helps = {" ".join(path): _option_help(path, option) for path in paths}
    assert len(set(helps.values())) == 1, helps


def test_help_says_what_benchmark_runs_on_and_what_data_show_writes(cli, monkeypatch):
    bench = " ".join(_help(cli, monkeypatch, ["benchmark"], 200).split())
    assert "default device (cuda if available, else cpu)" in bench
    assert "random weights unless --weights is given" in bench
    assert "--weights -w <str> DEFAULT (pretrained), none (random init" in bench
    assert "[default: none]" in bench
    show = " ".join(_help(cli, monkeypatch, ["data", "show"], 200).split())
    assert "PNG file to write (a file, not a folder)" in show
    detect = " ".join(_help(cli, monkeypatch, ["detect"], 200).split())
    assert "[default: cores-1, at most 4; 0 on 2 cores or fewer]" in detect
    assert "Output folder. [default: runs/detect/exp, then exp2, exp3...]" in detect
