"""Helpers every format shares: listing images, matching split names, placing image files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from visiontool.errors import DataError
from visiontool.io.images import is_image_path

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files in `folder`, sorted by name so ids and outputs are stable."""
    if not folder.is_dir():
        return []
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and is_image_path(p))


def match_split(split: str | None, available: list[str], where: Path) -> str | None:
    """The available split that `split` names: exact, else a prefix ('val' -> 'val2017'),
    else 'val' <-> 'valid'/'validation'. None when the format has no splits."""
    if not available:
        return None
    if split is None:
        return "train" if "train" in available else available[0]
    if split in available:
        return split
    aliases = {"val": ("valid", "validation"), "valid": ("val",), "validation": ("val",)}
    for candidate in (split, *aliases.get(split, ())):
        for name in available:
            if name.startswith(candidate):
                return name
    raise DataError(
        f"{where}: no split {split!r} (found: {', '.join(available)}); "
        "pass one of those, or a data spec naming the splits"
    )


def place_file(source: Path, dest: Path, *, transfer: str) -> None:
    """Put an image into an output layout: 'copy', 'link' or 'move'.

    'link' makes a hard link (no extra space, and the new data set holds real files, so it
    reads back: a symlink out of a data set counts as outside it); across file systems, where
    hard links cannot be made, it copies.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if transfer == "link":
        try:
            os.link(source, dest)
        except OSError:
            shutil.copyfile(source, dest)
    elif transfer == "move":
        os.replace(source, dest)
    else:
        shutil.copyfile(source, dest)


def output_path(out: Path, *parts: str, entry: str) -> Path:
    """`out/part/...` for parts named by the data (class names, split names), refused with a
    one-line DataError naming `entry` when a part is not one plain folder or file name: a
    writer never writes outside `out`, whatever the data set holds."""
    from visiontool.data.records import name_problem

    for part in parts:
        problem = name_problem(part, folder=True)
        if problem:
            raise DataError(f"{entry}: {part!r} {problem}; it cannot name a folder under {out}")
    return out.joinpath(*parts)


def visible_stems(paths: list[Path]) -> list[str]:
    """File stems usable as split names: hidden files (and so '.', '..') left out."""
    return [p.stem for p in paths if not p.name.startswith(".") and not p.stem.startswith(".")]


def unique_names(paths: list[Path]) -> list[str]:
    """Flat output file names for `paths`, suffixing `_2`, `_3`... where two stems collide."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem, suffix = path.stem, path.suffix.lower() or ".jpg"
        count = seen.get(stem.lower(), 0) + 1
        seen[stem.lower()] = count
        names.append(f"{stem}{suffix}" if count == 1 else f"{stem}_{count}{suffix}")
    return names


def read_names_file(path: Path) -> list[str]:
    """Class names, one per line (classes.txt / labels.txt), blank lines ignored."""
    from visiontool.data.records import read_text_capped

    try:
        lines = read_text_capped(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from exc
    return [line.strip() for line in lines if line.strip()]


def write_names_file(path: Path, classes: list[str]) -> None:
    from visiontool.data.records import name_problem
    from visiontool.io.atomic import write_bytes

    for name in classes:
        problem = name_problem(name)
        if problem:
            raise DataError(f"class name {name!r} {problem}; it cannot be written to {path}")
    write_bytes(path, ("\n".join(classes) + "\n").encode("utf-8"))
