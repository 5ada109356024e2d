"""`visiontool` entry point: joins the per-command modules and maps errors to exit codes.

This is the only place that turns a `VisiontoolError` into a one-line message and an exit code
(design.md): 0 ok, 1 some inputs failed or a gate was missed, 2 usage/data errors, 3 model or
weights errors. `--debug` shows the traceback instead.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from visiontool import __version__
from visiontool.cli import anchors, benchmark, data, detect, evaluate, models, train

DEBUG_ENV = "VISIONTOOL_DEBUG"


class _Group(TyperGroup):
    """Click group that converts engine exceptions once, for the console script and CliRunner."""

    def invoke(self, ctx: Any) -> Any:
        from visiontool.errors import VisiontoolError

        try:
            return super().invoke(ctx)
        except VisiontoolError as exc:
            if _debug(ctx):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _debug(ctx: Any) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


app = typer.Typer(
    cls=_Group,
    name="visiontool",
    help="Image classification and object detection on PyTorch and torchvision.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visiontool {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Detect, classify, train, evaluate and inspect anchors from one tool."""
    ctx.obj = {"debug": debug}


app.command("detect", help=detect.HELP)(detect.detect)
app.command("eval", help=evaluate.HELP)(evaluate.evaluate)
app.command("train", help=train.HELP)(train.train)
app.command("benchmark", help=benchmark.HELP)(benchmark.benchmark)
app.command("models", help=models.HELP)(models.models)
app.add_typer(data.app, name="data")
app.add_typer(anchors.app, name="anchors")


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="visiontool")
    finally:
        # Interpreter exit garbage-collects every object alive, and importing torch and
        # torchvision leaves a great many (torch._dynamo, sympy): that walk took ~0.7 s of
        # every model command. Frozen objects are skipped by the collector; memory is still
        # released by the OS as the process ends.
        gc.freeze()
