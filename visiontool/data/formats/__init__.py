"""Registers the data set readers and writers (kinds "reader" and "writer").

The registry imports this module on the first lookup of either kind. A reader entry's builder is
`read(path, split, *, classes=None)`; its meta holds `task`, `probe(path) -> bool` (auto-detect)
and `splits(path) -> list[str]`. A writer's builder is `write(splits, out, *, transfer)`.
"""

from __future__ import annotations

from visiontool import registry
from visiontool.data.formats import coco, csvlabels, imagefolder, voc, yolo

# Probe order for auto-detection: the most specific layouts first.
_FORMATS = (
    ("voc", voc, "detect", ("pascal_voc",)),
    ("coco", coco, "detect", ()),
    ("yolo", yolo, "detect", ("ultralytics",)),
    ("imagefolder", imagefolder, "classify", ("folder", "image_folder")),
    ("csv", csvlabels, "classify", ()),
)

for _name, _module, _task, _aliases in _FORMATS:
    registry.add(
        registry.Entry(
            kind="reader",
            name=_name,
            builder=_module.read,
            aliases=_aliases,
            meta={"task": _task, "probe": _module.probe, "splits": _module.splits},
        )
    )
    registry.add(
        registry.Entry(
            kind="writer", name=_name, builder=_module.write, aliases=_aliases, meta={"task": _task}
        )
    )
