"""The one file a `data` command writes (`data show --out`, `data stats --plot`), checked.

A picture of a data set must never cost the user a file: the path is refused (`ConfigError`,
exit 2, one line) when it is a folder, has a suffix we cannot write, lies inside the data set
being read (its annotations, images or anything else below it), or exists already without
`--exist-ok`. Checked before anything is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from visiontool.errors import ConfigError
from visiontool.io.paths import resolve_path

PNG_ONLY = (".png",)
# what `visiontool.io.draw.save_image` (OpenCV) encodes by suffix
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".webp", ".tif", ".tiff")


def check_out_file(
    out: str | Path,
    *,
    option: str,
    reads: Iterable[str | Path] = (),
    exist_ok: bool = False,
    suffixes: tuple[str, ...] = PNG_ONLY,
    example: str = "grid.png",
) -> Path:
    """`out` as a Path, after the checks of the module docstring; `reads` are the data set's
    path and root (files are protected themselves, folders with everything below them)."""
    text = str(out)
    if not text.strip() or text.strip() in (".", ".."):
        raise ConfigError(f"{option} needs a file name, e.g. {option} {example}")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(
            f"{option} {path} is a folder; give the file's name, e.g. {path / example}"
        )
    if text.endswith(("/", os.sep)):
        raise ConfigError(f"{option} {text} names a folder; give a file name such as {example}")
    check_outside(path, reads, option=option)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        wanted = suffixes[0] if len(suffixes) == 1 else ", ".join(suffixes)
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ConfigError(
            f"{option} {path} has {got}; it writes an image: give a file name ending in {wanted}"
        )
    if path.is_symlink() or path.exists():
        if not exist_ok:
            raise ConfigError(
                f"{option} {path} exists; pass --exist-ok to replace it, or choose a new name"
            )
        if not path.is_symlink() and not path.is_file():
            raise ConfigError(f"{option} {path} exists and is not a regular file; choose another")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is a file, not a folder; choose another path")
    return path


def check_outside(path: Path, reads: Iterable[str | Path], *, option: str) -> None:
    """`ConfigError` when `path` is one of `reads` (files) or lies inside one (folders)."""
    target = resolve_path(path)
    for raw in reads:
        item = resolve_path(Path(raw))
        if target == item or item in target.parents:
            raise ConfigError(
                f"{option} {path} lies inside the data set being read ({raw}): it would "
                "overwrite or add to the data set's own files; write it outside the data set"
            )
