"""`visiontool` entry point: joins the per-command modules and maps errors to exit codes.

This is the only place that turns a `VisiontoolError` into a one-line message and an exit code
(design.md): 0 ok, 1 some inputs failed or a gate was missed, 2 usage/data errors, 3 model or
weights errors. `--debug` shows the traceback instead.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
import threading
import warnings
from typing import Any

import typer

from visiontool import __version__
from visiontool.cli import anchors, benchmark, data, detect, evaluate, export, models, train
from visiontool.cli.common import Command, Group

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

DEBUG_ENV = "VISIONTOOL_DEBUG"


class _Group(Group):
    """Click group that converts engine exceptions once, for the console script and CliRunner."""

    def invoke(self, ctx: Any) -> Any:
        from visiontool.errors import VisiontoolError

        # Pillow warns of images of 89-179 M pixels as possible decompression bombs (2 lines
        # of Python warning); the size is checked by --max-pixels, and Pillow refuses larger
        # ones, which becomes that image's one-line failure
        warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
        try:
            return super().invoke(ctx)
        except VisiontoolError as exc:
            if _debug(ctx):
                raise
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (turned into one by `run`)
            terminated = _TERMINATED.is_set()
            typer.echo("terminated (SIGTERM)" if terminated else "interrupted", err=True)
            raise typer.Exit(143 if terminated else 130) from None
        except (OSError, MemoryError, RecursionError) as exc:
            # The safety net: engine sites map what they expect to a VisiontoolError; anything
            # else from the OS or the interpreter still ends as one line, never a traceback.
            if _debug(ctx) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
                raise
            typer.echo(f"error: {_resource_line(exc)}", err=True)
            raise typer.Exit(2) from None

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Parser errors (unknown option, bad value, missing option) as one line on stderr,
        exit 2, in place of click's boxed panel; `--help` output is unchanged."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:  # help is already printed
            sys.exit(exc.exit_code)
        except click_exceptions.UsageError as exc:
            typer.echo(f"error: {usage_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc: Any) -> str:
    """`<message> (see 'visiontool <cmd> --help')`: click's message on one line, with the
    help hint of the command it belongs to."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "visiontool"
    return f"{message} (see '{command} --help')"


def _resource_line(exc: BaseException) -> str:
    from visiontool.runtime import os_error_text

    if isinstance(exc, OSError):
        return os_error_text(exc)
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --imgsz, --batch or input, or --device cuda"
    return "input nested too deeply to read (recursion limit); check the file for damage"


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


def _one_line(exc: BaseException) -> str:
    """The error's own message. An error raised in a DataLoader worker reaches this process
    re-made by torch with the worker's whole traceback as its text; its last line is ours."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith(type(exc).__module__) else last


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


# One line each in `visiontool --help` (at 80 columns too); `visiontool CMD --help` says the rest.
SHORT_HELP = {
    "detect": "Detect objects, or classify, in images, videos, folders, streams.",
    "eval": "Score a model or predictions on a data set (mAP, AP50, top-1).",
    "train": "Train a detector (head + backbone, or a model) or a classifier.",
    "benchmark": "Time models (latency, images/s, TFLOP/s), data, eval or detect.",
    "models": "List models (weights offline or to download), heads, backbones.",
    "data": "Check, convert, generate, preview and summarise data sets.",
    "anchors": "Generate, see, label, fit and check anchor boxes.",
    "export": "Export a model to ONNX or TorchScript, checked against the model.",
}
app.command("detect", help=detect.HELP, short_help=SHORT_HELP["detect"], cls=Command)(detect.detect)
app.command("eval", help=evaluate.HELP, short_help=SHORT_HELP["eval"], cls=Command)(
    evaluate.evaluate
)
app.command("train", help=train.HELP, short_help=SHORT_HELP["train"], cls=Command)(train.train)
app.command("benchmark", help=benchmark.HELP, short_help=SHORT_HELP["benchmark"], cls=Command)(
    benchmark.benchmark
)
app.command("export", help=export.HELP, short_help=SHORT_HELP["export"], cls=Command)(export.export)
app.add_typer(models.app, name="models", help=models.HELP, short_help=SHORT_HELP["models"])
app.add_typer(data.app, name="data", short_help=SHORT_HELP["data"])
app.add_typer(anchors.app, name="anchors", short_help=SHORT_HELP["anchors"])


_TERMINATED = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM is handled as Ctrl-C: the run's KeyboardInterrupt paths finalise it (summary
    with stopped_early, no temp files), and the process exits 143. A second SIGTERM while it
    finalises ends the process at once."""
    _TERMINATED.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="visiontool")
    finally:
        # Interpreter exit garbage-collects every object alive, and importing torch and
        # torchvision leaves a great many (torch._dynamo, sympy): that walk took ~0.7 s of
        # every model command. Frozen objects are skipped by the collector; memory is still
        # released by the OS as the process ends.
        gc.freeze()
