"""ImageFolder classification: `<split>/<class>/*.jpg`, or `<class>/*.jpg` for one split.

Classes are the class folders of every split, sorted, so train and val share one label space
even when a split lacks a class.
"""

from __future__ import annotations

from pathlib import Path

from visiontool.data.classification import ClassificationDataset
from visiontool.data.formats.common import (
    SPLIT_NAMES,
    list_images,
    match_split,
    output_path,
    place_file,
)
from visiontool.data.records import Issues, outside_reason, relative_where
from visiontool.errors import DataError


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_dirs(root: Path) -> dict[str, Path]:
    return {
        p.name: p
        for p in _class_dirs(root)
        if p.name in SPLIT_NAMES and any(c.is_dir() for c in p.iterdir())
    }


def probe(path: Path) -> bool:
    if not path.is_dir():
        return False
    folders = list(_split_dirs(path).values()) or [path]
    return any(list_images(c) for folder in folders for c in _class_dirs(folder))


def splits(path: Path) -> list[str]:
    return [] if path.is_file() else list(_split_dirs(path))


def read(
    path: Path, split: str | None, *, classes: list[str] | None = None
) -> ClassificationDataset:
    if not path.is_dir():
        raise DataError(f"{path}: an image folder data set must be a directory")
    split_dirs = _split_dirs(path)
    split_name = match_split(split, list(split_dirs), path)
    folder = split_dirs[split_name] if split_name else path
    if classes is None:
        found = {c.name for f in (split_dirs.values() or [path]) for c in _class_dirs(f)}
        classes = sorted(found)
    issues = Issues()
    samples: list[tuple[Path, int]] = []
    index_of = {name: k for k, name in enumerate(classes)}
    for class_dir in _class_dirs(folder):
        if class_dir.name not in index_of:
            issues.error(class_dir, f"unknown class {class_dir.name!r} (not in the class list)")
            continue
        images = list_images(class_dir, recursive=True)
        if not images:
            issues.warn(class_dir, "class folder has no images")
        for image in images:
            problem = outside_reason(image, path)
            if problem:
                issues.error(relative_where(image, path), f"image {problem}")
            else:
                samples.append((image, index_of[class_dir.name]))
    return ClassificationDataset(
        samples, classes, root=path, format="imagefolder", split=split_name, issues=issues.items
    )


def write(splits: dict[str, ClassificationDataset], out: Path, *, transfer: str = "copy") -> None:
    """`out/<split>/<class>/<file>`; multi-label samples go under their first label."""
    for split, dataset in splits.items():
        folders = [
            output_path(out, split, name, entry=f"class {k} of split {split!r}")
            for k, name in enumerate(dataset.classes)
        ]
        used: set[Path] = set()
        for path, label in dataset.samples:
            dest = folders[label] / path.name
            k = 2
            while dest in used:
                dest = dest.with_name(f"{path.stem}_{k}{path.suffix}")
                k += 1
            used.add(dest)
            place_file(path, dest, transfer=transfer)
