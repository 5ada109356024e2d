"""Copy a trained checkpoint into visiontool/weights/, score it on val and update the manifest.

    python tools/ship_weights.py NAME RUN_DIR DATA --description TEXT --data-recipe CMD \
        [--heldout-recipe CMD]

The manifest records what `make weights` ran, so anyone can rebuild and compare. With
`--heldout-recipe` (a `visiontool data synth` command with a seed the training never used), the
model is also scored on that data's val split: the numbers a user can expect on data it never
saw, recorded apart from the training data's val numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from visiontool.io.atomic import write_json
from visiontool.io.checkpoint import make_checkpoint, save_checkpoint
from visiontool.models.shipped import sha256

WEIGHTS = Path(__file__).resolve().parents[1] / "visiontool" / "weights"  # package data


def slim_copy(source: Path, target: Path, name: str, conf: float | None = None) -> dict:
    """Weights, model metadata (named `name`, the shipped name; `conf` its default score
    threshold) and training arguments; no optimizer or history."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["model_info"]["name"] = name
    if conf is not None:
        checkpoint["model_info"]["conf"] = conf
    slim = make_checkpoint(
        checkpoint["state_dict"], checkpoint["model_info"], train_args=checkpoint["train_args"]
    )
    save_checkpoint(target, slim)
    return checkpoint


def score(weights: Path, data: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "visiontool", "eval", "--weights", str(weights),
               "--data", data, "--out", tmp, "--exist-ok", "--no-plots", "--quiet"]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads((Path(tmp) / "metrics.json").read_text())


def heldout_score(recipe: str, weights: Path, keys: tuple[str, ...]) -> dict:
    """Generate the held-out data from `recipe` (its `--out` replaced by a temporary folder)
    and score `weights` on its val split: `keys`, and for a detector AP50 per class."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = shlex.split(recipe)[1:]  # drop the program name
        argv[argv.index("--out") + 1] = str(Path(tmp) / "data")
        cmd = [sys.executable, "-m", "visiontool", *argv, "--quiet"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        metrics = score(weights, str(Path(tmp) / "data"))
    per_class = metrics.get("per_class", {})
    return {
        "data_recipe": recipe,
        "split": "val",
        "metrics": {k: round(float(metrics[k]), 4) for k in keys if k in metrics},
        **(
            {"ap50_per_class": {n: round(float(v["ap50"]), 4) for n, v in per_class.items()}}
            if per_class and "ap50" in next(iter(per_class.values()))
            else {}
        ),
    }


def training_record(runs: list[Path], device: str | None) -> dict:
    """Where and how long the model trained: the sum of every run's epoch wall times (a recipe
    may chain runs; pauses count, e.g. while tests shared the cores) and the device (default:
    this machine's CPU or GPU name)."""
    import csv

    seconds = 0.0
    for run in runs:
        with (run / "results.csv").open(newline="") as handle:
            seconds += sum(float(row["time_s"]) for row in csv.DictReader(handle))
    return {"device": device or machine_name(), "wall_minutes": round(seconds / 60, 1)}


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {os.cpu_count()} x {model}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("run", type=Path)
    parser.add_argument("data")
    parser.add_argument("--description", default="")
    parser.add_argument("--data-recipe", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--heldout-recipe", help="data synth command with an unused seed")
    parser.add_argument("--checkpoint", default="best.pt", help="best.pt or last.pt of the run")
    parser.add_argument("--earlier-run", type=Path, action="append", default=[],
                        help="a run this one started from (its time counts)")  # fmt: skip
    parser.add_argument("--device", help="what it trained on (default: this machine)")
    parser.add_argument("--tune-conf", action="store_true",
                        help="detector: default --conf = best-F1 score on val")  # fmt: skip
    args = parser.parse_args()
    target = WEIGHTS / f"{args.name}.pt"
    source = args.run / "weights" / args.checkpoint
    checkpoint = slim_copy(source, target, args.name)
    info = checkpoint["model_info"]
    metrics = score(target, args.data)
    if args.tune_conf and info["task"] == "detect":  # chosen on val, reported on held-out data
        checkpoint = slim_copy(source, target, args.name, conf=round(metrics["f1_conf"], 3))
        info = checkpoint["model_info"]
    keys = ("top1", "top5")
    if info["task"] == "detect":
        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "voc_map50", "f1")
    entry = {
        "name": args.name,
        "file": target.name,
        "task": info["task"],
        "architecture": info["build"],
        "classes": info["classes"],
        "input_size": info["input_size"],
        **({"conf": info["conf"]} if info.get("conf") is not None else {}),
        "description": args.description,
        "data_recipe": args.data_recipe,
        "command": args.command,
        "metric_val": {k: round(float(metrics[k]), 4) for k in keys if k in metrics},
        **(
            {"heldout": heldout_score(args.heldout_recipe, target, keys)}
            if args.heldout_recipe
            else {}
        ),  # fmt: skip
        "training": training_record([*args.earlier_run, args.run], args.device),
        "size_bytes": target.stat().st_size,
        "sha256": sha256(target),
    }
    manifest_path = WEIGHTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    models = [m for m in manifest.get("models", []) if m["name"] != args.name] + [entry]
    write_json(manifest_path, {"models": sorted(models, key=lambda m: m["name"])})
    print(
        json.dumps({"val": entry["metric_val"], "heldout": entry.get("heldout")}),
        target,
        entry["size_bytes"],
        "bytes",
    )


if __name__ == "__main__":
    main()
