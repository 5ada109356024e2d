"""`visiontool export`: a model as ONNX or TorchScript, checked against the eager model."""

from __future__ import annotations

from pathlib import Path

import typer

from visiontool.cli.common import MODEL_HELP, WEIGHTS_HELP, Console, JsonOpt, QuietOpt

HELP = (
    "Export a model (--model NAME or --weights CHECKPOINT) as ONNX or TorchScript, then check "
    "it: on sample images the exported and the eager model must give the same detections "
    "(boxes within 1 px, same classes, scores within 1e-3). The file carries the model's "
    "classes and preprocessing, so `visiontool detect --weights model.onnx` runs it through "
    "onnxruntime (pip install 'visiontool\\[onnx]')."
)


def export(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    weights: str = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP, show_default="DEFAULT"),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Input height and width may vary."),
    half: bool = typer.Option(False, "--half", help="fp16 weights and inputs (for GPUs)."),
    imgsz: int = typer.Option(None, "--imgsz", help="Input size.", show_default="the model's"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    out: Path = typer.Option(
        None, "--out", help="File to write.", show_default="MODEL.onnx / MODEL.torchscript"
    ),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an existing --out file."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    from visiontool.engine.export import ExportConfig, run_export

    console = Console(json_mode=json_out, quiet=quiet)
    if model is None and weights is None:
        from visiontool.errors import ConfigError

        raise ConfigError("pass --model NAME or --weights CHECKPOINT")
    report = run_export(ExportConfig(model=model, weights=weights or "DEFAULT", format=fmt,
                                     dynamic=dynamic, half=half, imgsz=imgsz, out=out,
                                     device=device, exist_ok=exist_ok))  # fmt: skip
    check = report.check
    if json_out:
        console.emit_json(report.to_dict())
    if check["compared"] == "detections" and not check["detections"]:
        console.warn("the sample images gave no detection scoring 0.05 or more (random or "
                     "unrelated weights?): the check compared empty outputs only")  # fmt: skip
    agreement = (
        f"{check['detections']} detections agree: boxes within {check['max_box_px']:.3f} px, "
        f"scores within {check['max_score_diff']:.1e}"
        if check["compared"] == "detections"
        else f"logits within {check['max_logit_diff']:.1e}"
    )
    console.final(
        f"exported {report.format} ({'x'.join(map(str, report.input_shape))} input); checked on "
        f"{check['images']} sample images: {agreement}; saved to {report.path}"
    )
