"""Conversion between formats: any data set written to disk in another format.

The in-memory COCO form of any detection data set (`data.formats.coco.to_coco_dict`) is what
the COCO writer and `visiontool eval` use.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from visiontool.errors import ConfigError, DataError
from visiontool.io.paths import check_out_dir, prepare_out

DETECTION_FORMATS = ("coco", "voc", "yolo")
CLASSIFICATION_FORMATS = ("imagefolder", "csv")


def convert_dataset(
    src: str | Path,
    *,
    to: str,
    out: str | Path,
    link: bool = False,
    format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write every split of `src` in format `to` under `out`; returns a summary dict."""
    from visiontool import registry
    from visiontool.data.datasets import open_splits

    out = Path(out)
    if to not in DETECTION_FORMATS + CLASSIFICATION_FORMATS:
        raise ConfigError(
            f"--to must be one of {', '.join(DETECTION_FORMATS + CLASSIFICATION_FORMATS)}, "
            f"got {to!r}"
        )
    reads = {"recursive_inputs" if Path(src).is_dir() else "inputs": [src]}
    # before reading src; the CLI has no --exist-ok (files of another layout would mix in)
    check_out_dir(out, "data convert", exist_ok=overwrite, has_exist_ok=False, **reads)
    splits = open_splits(src, format=format)
    task = next(iter(splits.values())).task
    wanted = "detect" if to in DETECTION_FORMATS else "classify"
    if task != wanted:
        kind = "detection" if task == "detect" else "classification"
        raise DataError(f"{src} is a {kind} data set; it cannot be written as {to}")
    first = next(iter(splits.items()))
    for name, dataset in splits.items():
        if dataset.classes != first[1].classes:
            raise DataError(
                f"{src}: split {name!r} has different class names from split {first[0]!r}; "
                "give every split the same classes"
            )
    writer = registry.get("format", to).write
    with prepare_out(out, "data convert", exist_ok=overwrite, **reads):
        writer(splits, out, transfer="link" if link else "copy")
    return {
        "source": str(src),
        "out": str(out),
        "format": to,
        "splits": {name: len(ds) for name, ds in splits.items()},
        "classes": len(next(iter(splits.values())).classes),
    }


def stage_dir(out: Path) -> Path:
    """A scratch folder inside `out` for generators that write images before the layout."""
    path = out / ".staging"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
