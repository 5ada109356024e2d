"""Class-name lists of the data sets pretrained weights come from (COCO, ImageNet).

Read from a JSON file shipped with the package so that listing models needs no torchvision.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("class_names.json")
NON_CLASSES = ("__background__", "N/A")


@cache
def _load() -> dict[str, list[str]]:
    return json.loads(_FILE.read_text())


def coco91() -> list[str]:
    """torchvision's 91-entry COCO label space: index = COCO category id, with gaps as 'N/A'."""
    return list(_load()["coco91"])


def coco80() -> list[str]:
    """The 80 real COCO classes, in category-id order."""
    return [name for name in coco91() if name not in NON_CLASSES]


def coco80_category_ids() -> list[int]:
    """COCO category id of each of the 80 classes (1..90 with gaps)."""
    return [i for i, name in enumerate(coco91()) if name not in NON_CLASSES]


def imagenet() -> list[str]:
    return list(_load()["imagenet"])
