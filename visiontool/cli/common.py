"""Options and output helpers shared by every command (the CLI contract in design.md).

Only typer, rich and the standard library here: no torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# Help conventions: a sentence or two ending in a full stop; a default that is not a plain value
# is still shown as `[default: ...]` (`show_default="words"`, see `_plain_defaults`), never in
# the sentence; the same option reads the same in every command.
DeviceOpt = typer.Option("auto", "--device", help="auto (cuda if available), cpu, cuda or cuda:N.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output on stdout; logs on stderr.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only errors and the final summary.")
SeedOpt = typer.Option(0, "--seed", help="Random seed.")
ExistOkOpt = typer.Option(
    False,
    "--exist-ok",
    help="Reuse the output folder (no new exp2...); only this command's files there are replaced.",
)
WEIGHTS_HELP = "DEFAULT (pretrained), none (random init) or a checkpoint PATH."
MODEL_HELP = "Registry name (see `visiontool models`)."
WORKERS_HELP = "Image-decoding processes."
WORKERS_DEFAULT = "cores-1, at most 4; 0 on 2 cores or fewer"
WorkersOpt = typer.Option(None, "--workers", help=WORKERS_HELP, show_default=WORKERS_DEFAULT)


def out_option(command: str) -> Any:
    return typer.Option(
        None, "--out", help="Output folder.", show_default=f"runs/{command}/exp, then exp2, exp3..."
    )


def plain_output() -> bool:
    """Line-oriented logs instead of rich widgets: not a terminal, or running in CI."""
    return not sys.stderr.isatty() or os.environ.get("CI", "") not in ("", "0", "false")


class Console:
    """Where a command's human-facing text goes.

    With --json, stdout is reserved for machine-readable output and all human text goes to
    stderr. With --quiet only warnings and the final lines are printed.
    """

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        from rich.console import Console as RichConsole

        self.json_mode = json_mode
        self.quiet = quiet
        self.plain = plain_output()
        self.rich = RichConsole(
            stderr=json_mode, highlight=False, soft_wrap=True, no_color=self.plain
        )
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True, no_color=self.plain)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.rich.print(message, markup=False)

    def final(self, message: str) -> None:
        self.rich.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {message}", markup=False)

    def emit_json(self, data: Any) -> None:
        """One JSON document (or JSONL line) on stdout."""
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", box=None)
        for index, column in enumerate(columns):
            table.add_column(column, no_wrap=index == 0)
        for row in rows:
            table.add_row(*(str(value) for value in row))
        self.rich.print(table)


# -- list options ---------------------------------------------------------------------------
# One convention for every option that takes several values: commas (`--ratios 0.5,1,2`), or the
# flag repeated (`--ratios 0.5 --ratios 1`); numbers may also follow one flag separated by spaces
# (`--ratios 0.5 1 2`). `list_option` declares such an option; `Command` does the space merging.

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_SPLIT = re.compile(r"[,\s]+")
LIST_KINDS = ("positive", "int", "name", "threshold", "gate", "option")
_METAVARS = {
    "positive": "N,N...",
    "int": "N,N...",
    "name": "NAME,...",
    "threshold": "T,T...",  # or start:stop:step, which the option's help says
    "gate": "KEY=VALUE",
    "option": "KEY=VALUE",
}
_EXAMPLES = {
    "positive": "numbers like 0.5,1,2",
    "int": "whole numbers like 1,2,3",
    "name": "names like circle,star",
    "threshold": "'0.5,0.75' or '0.5:0.95:0.05'",
    "gate": "KEY=VALUE like map50=0.5",
    "option": "KEY=VALUE like noobj=0.5 or multiscale=true",
}


class ListParser:
    """The click callback of a list option: the values given (one per flag) -> one flat list
    (or, with `groups`, one list per `;`-separated group). Bad input is a usage error."""

    def __init__(self, kind: str, *, groups: bool = False) -> None:
        if kind not in LIST_KINDS:
            raise ValueError(f"unknown list kind {kind!r}")
        self.kind = kind
        self.groups = groups

    @property
    def numeric(self) -> bool:
        return self.kind in ("positive", "int", "threshold")

    def __call__(self, ctx: Any, param: Any, value: Any) -> Any:
        items = [str(v) for v in (value or ())]
        if not items:
            return None
        name = max(param.opts, key=len) if param is not None else "value"
        if self.kind == "gate":
            return list(_gates(items, name).items())  # (key, value) pairs: typer keeps lists
        if self.kind == "option":
            return list(_options(items, name).items())
        if self.groups and any(";" in item for item in items):
            text = ";".join(items)
            return [self._values(group, name, text) for group in text.split(";") if group.strip()]
        return self._values(",".join(items), name, ",".join(items))

    def _values(self, text: str, name: str, shown: str) -> list[Any]:
        tokens = [t for t in _SPLIT.split(text) if t]
        if not tokens:
            raise typer.BadParameter(f"{name} takes {_EXAMPLES[self.kind]}, got {shown!r}")
        if self.kind == "name":
            return tokens
        values: list[Any] = []
        try:
            for token in tokens:
                if self.kind == "threshold" and ":" in token:
                    values.extend(_range(token))
                elif self.kind == "int":
                    values.append(int(token))
                else:
                    number = float(token)
                    if not math.isfinite(number) or number <= 0:
                        raise ValueError
                    values.append(number)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise typer.BadParameter(
                f"{name} takes {_EXAMPLES[self.kind]}, got {shown!r}"
            ) from None
        return values


def _range(token: str) -> list[float]:
    """'start:stop:step' with both ends included."""
    start, stop, step = (float(p) for p in token.split(":"))
    count = int(round((stop - start) / step)) + 1
    if count < 1 or count > 1000:
        raise ValueError
    return [round(start + i * step, 10) for i in range(count)]


def _options(items: list[str], name: str) -> dict[str, Any]:
    """KEY=VALUE items (repeated or comma-separated) -> {key: value}; values are true/false,
    numbers or words."""
    options: dict[str, Any] = {}
    for item in (t.strip() for i in items for t in i.split(",")):
        if not item:
            continue
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise typer.BadParameter(f"{name} takes {_EXAMPLES['option']}, got {item!r}")
        if key in options:
            raise typer.BadParameter(f"{name} sets {key} twice; keep one")
        options[key] = _option_value(value)
    return options


def _option_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if NUMBER.match(text):
        return float(text)
    return text


def _gates(items: list[str], name: str) -> dict[str, float]:
    """KEY=VALUE items (repeated or comma-separated) -> {key: value}."""
    gates: dict[str, float] = {}
    for item in (t.strip() for i in items for t in i.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            if not sep or not key:
                raise ValueError
            number = float(value)
        except ValueError:
            raise typer.BadParameter(f"{name} takes {_EXAMPLES['gate']}, got {item!r}") from None
        if key in gates:
            raise typer.BadParameter(
                f"{key} is gated twice ({key}={gates[key]:g} and {item!r}); keep one"
            )
        gates[key] = number
    return gates


def list_option(
    *decls: str,
    kind: str,
    help: str,
    default: str | None = None,
    metavar: str | None = None,
    groups: bool = False,
    show_default: str | None = None,
) -> Any:
    """An option taking several values (declare its parameter as `list[str]`; the command body
    receives the parsed list, or None when the option is not given). `kind`: positive (numbers
    > 0), int, name, threshold (numbers or start:stop:step), gate (KEY=VALUE -> (key, value)
    pairs). `show_default`: what --help says the default is when `default` is None (the
    command then decides, e.g. "0.5:0.95:0.05")."""
    parser = ListParser(kind, groups=groups)

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        return parser(ctx, param, value)

    callback.list_parser = parser  # type: ignore[attr-defined]  # read by Command.parse_args
    return typer.Option(
        [default] if default is not None else None,
        *decls,
        callback=callback,
        metavar=metavar or _METAVARS[kind],
        help=help,
        show_default=default if default is not None else (show_default or False),
    )


def _hide_flag_types(params: list[Any]) -> list[Any]:
    """Boolean flags take no value: show no `<bool>` type beside them in --help; and defaults
    given in words read like the others (`_plain_defaults`)."""
    for param in params:
        if getattr(param, "is_flag", False) and not param.metavar:
            param.metavar = ""
    return _plain_defaults(params)


def _plain_defaults(params: list[Any]) -> list[Any]:
    """A default given in words (`show_default="cores-1, at most 4"`) shows as
    `[default: cores-1, at most 4]`, like a plain value, not as typer's `[default: (...)]`."""
    for param in params:
        text = getattr(param, "show_default", None)
        if isinstance(text, str) and hasattr(param, "_get_default_string"):
            param._get_default_string = lambda *_, _text=text, **__: _text
    return params


class Command(TyperCommand):
    """Every visiontool command: flags show no value type in --help, and numbers may follow a
    numeric list option's flag separated by spaces (`--ratios 0.5 1 2` = `--ratios 0.5,1,2`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _hide_flag_types(super().get_params(ctx))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        numeric = {
            opt
            for param in self.params
            if getattr(getattr(param.callback, "list_parser", None), "numeric", False)
            for opt in param.opts
        }
        merged: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            merged.append(token)
            i += 1
            if token == "--":
                merged.extend(args[i:])
                break
            if token in numeric and i < len(args):
                merged.append(args[i])  # the flag's own value, whatever it is
                i += 1
                while i < len(args) and _is_numbers(args[i]):
                    merged[-1] += "," + args[i]
                    i += 1
        return super().parse_args(ctx, merged)


def _is_numbers(token: str) -> bool:
    parts = [p for p in _SPLIT.split(token) if p]
    return bool(parts) and all(
        NUMBER.match(p) or (p.count(":") == 2 and all(NUMBER.match(x) for x in p.split(":")))
        for p in parts
    )


class Group(TyperGroup):
    """Every visiontool command group: flags show no value type in --help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _hide_flag_types(super().get_params(ctx))


def parse_pair(text: str, *, sep: str = "x", name: str = "value") -> tuple[int, int]:
    """Parse 'AxB' (sizes are WxH, as image tools print them) or 'A,B' with sep=',' into two
    ints, in the order given, with a usage error on bad input."""
    parts = text.lower().replace(" ", "").split(sep)
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{name} must look like 640{sep}480, got {text!r}")
    return int(parts[0]), int(parts[1])


def resolve_out(out: Path | None, command: str, *, exist_ok: bool = False) -> Path:
    """--out as given, or the next free runs/<command>/exp{,2,3...} folder."""
    from visiontool.io.paths import run_dir

    return run_dir(out, command, exist_ok=exist_ok)
