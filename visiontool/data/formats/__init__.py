"""Registers the data set formats (registry kind "format"), one `FormatSpec` each.

The registry imports this module on the first lookup of the kind. Probe order for
auto-detection is registration order: the most specific layouts first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontool import registry
from visiontool.data.formats import coco, csvlabels, imagefolder, voc, yolo


@dataclass(frozen=True)
class FormatSpec:
    """One annotation format: how to recognise, list, read and write it.

    `read(path, split, *, classes=None)` returns a data set; `write(splits, out, *, transfer)`
    writes one; `probe(path)` says whether a path looks like this format; `splits(path)` lists
    its split names.
    """

    name: str
    task: str  # "detect" | "classify"
    read: Callable[..., Any]
    write: Callable[..., None]
    probe: Callable[[Path], bool]
    splits: Callable[[Path], list[str]]
    aliases: tuple[str, ...] = ()


for _name, _module, _task, _aliases in (
    ("voc", voc, "detect", ("pascal_voc",)),
    ("coco", coco, "detect", ()),
    ("yolo", yolo, "detect", ("ultralytics",)),
    ("imagefolder", imagefolder, "classify", ("folder", "image_folder")),
    ("csv", csvlabels, "classify", ()),
):
    registry.add(
        "format",
        FormatSpec(
            name=_name,
            task=_task,
            read=_module.read,
            write=_module.write,
            probe=_module.probe,
            splits=_module.splits,
            aliases=_aliases,
        ),
    )
