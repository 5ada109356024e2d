"""`detect --resume`: carry on a run that stopped, skipping the inputs it already did.

A detect run records its options in `args.json` before the first image and its results in
predictions.jsonl as it goes (a line per image, flushed), so after a kill (Ctrl-C, SIGTERM,
SIGKILL, a lost machine) the folder says what was done. Resuming folds in the parts a torchrun
job left (`merge.merge_parts`), cuts a half-written last line, and skips every input that has a
line (failed ones too: a corrupt file stays corrupt; run them again with a new --out). The
options that change results must be the ones the run started with, so one folder never mixes
two models or thresholds; speed options (--batch, --workers, --device) may differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontool.engine.predict.merge import (
    PART_GLOB,
    PREDICTIONS,
    LineCounts,
    count_lines,
    merge_parts,
    repair_tail,
)
from visiontool.errors import ConfigError

ARGS = "args.json"
RESULT_OPTIONS = (
    "model", "weights", "conf", "iou", "max_det", "classes", "imgsz", "half", "topk",
    "max_pixels", "tile", "tile_overlap", "merge", "save_img", "save_txt", "save_conf",
    "save_coco", "data",
)  # fmt: skip
"""The options whose values decide what a run writes for an image."""


def run_args(config: Any) -> dict[str, Any]:
    """args.json: every option of the run, JSON-ready (paths as strings)."""
    from dataclasses import asdict

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


@dataclass
class Previous:
    """What the folder's earlier run(s) did."""

    counts: LineCounts
    cut_bytes: int = 0  # a half-written last line removed
    merged: int = 0  # lines folded in from parts a torchrun job left

    def describe(self, out: Path) -> str:
        notes = []
        if self.merged:
            notes.append(f"{self.merged} from unmerged process parts")
        if self.cut_bytes:
            notes.append("a half-written last line dropped")
        extra = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"--resume: {self.counts.images} input(s) already done in {out}{extra}; skipping them"
        )


def has_run(out: Path) -> bool:
    """Whether `out` holds a detect run (to resume, or for --exist-ok to replace): its
    predictions (whole or in process parts), or an args.json with detect's own keys (a run
    that stopped before any result; another command's args.json is not one)."""
    from visiontool.io.paths import args_record

    if (out / PREDICTIONS).is_file() or any(out.glob(PART_GLOB)):
        return True
    return "sources" in args_record(out)


def load_previous(out: Path, config: Any) -> Previous:
    """Check the options against args.json, then read (and repair) what was done."""
    check_same_options(out, config)
    merged = merge_parts(out)
    cut = repair_tail(out / PREDICTIONS)
    return Previous(count_lines(out / PREDICTIONS), cut_bytes=cut, merged=merged)


def check_same_options(out: Path, config: Any) -> None:
    """ConfigError naming each result option that differs from the run being resumed."""
    path = out / ARGS
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # a run from before args.json: nothing to check against
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {path} ({exc})") from None
    if not isinstance(before, dict):
        raise ConfigError(f"--resume: {path} is not a detect run's args.json")
    now = run_args(config)
    changed = [
        f"--{name.replace('_', '-')} {_shown(now.get(name))} (the run had {_shown(before[name])})"
        for name in RESULT_OPTIONS
        if name in before and _normal(before.get(name)) != _normal(now.get(name))
    ]
    if changed:
        raise ConfigError(
            f"--resume: options differ from the run in {out}: {', '.join(changed)}; resume "
            "with the options it started with, or write to a new --out"
        )


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as args.json holds them


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
