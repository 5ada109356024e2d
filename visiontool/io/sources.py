"""Input sources: files, folders, globs, list files and stdin, as one lazy stream of paths.

A SOURCE is an image file, a directory (recursive with `recursive=True`), a glob, a `.txt` file
of paths, or `-` for paths on stdin. Each path comes with a relative output name, so annotated
images keep the input's layout and names never collide. Paths stream: memory stays flat on
folders of any size.

Folder scans and globs take regular files only (symlinks to them included): a FIFO, socket or
device found there is skipped without a word, as `ls *.jpg | xargs` users expect. A path named
explicitly (an argument, a list entry) that is not a regular file is passed on, and the decoder
reports it as a failed input (exit 1 at the end), without opening it for a blocking read.

Video files (in folders and globs too), camera indexes (`0`) and stream URLs (`rtsp://`,
`http://`, ...) are sources like images: their items have `kind` "video" or "stream", and the
decoder reads their frames (`visiontool.io.video`). A camera or URL gets an output name made
from it (`camera0`, `rtsp_host_path`).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from visiontool.errors import DataError
from visiontool.io.images import is_image_path
from visiontool.io.video import is_stream_spec, is_video_path

GLOB_CHARS = frozenset("*?[")
ImageKind = str  # "image", "video" or "stream"


@dataclass(frozen=True)
class SourceItem:
    """One input path and the relative name its outputs get."""

    path: str
    rel: str
    kind: ImageKind = "image"

    @property
    def is_video(self) -> bool:
        """Frames, not one image: a video file, a camera or a stream."""
        return self.kind != "image"


@dataclass(frozen=True)
class SourcePlan:
    """Validated source specs; picklable so DataLoader workers can re-walk them.

    Iterating yields the selected items: all of them, less the first `skip` occurrences of
    each path (`detect --resume`: done before), and of the rest every `shard[1]`-th from
    `shard[0]` (one process of several under torchrun). `walk` yields every item with its
    position, selected or not, so output names stay those of one whole run."""

    specs: tuple[str, ...]
    recursive: bool = False
    stdin_lines: tuple[str, ...] = ()
    skip: tuple[tuple[str, int], ...] = ()
    shard: tuple[int, int] = (0, 1)

    def walk(self) -> Iterator[tuple[int, SourceItem, bool]]:
        """(position in the whole plan, item, selected) for every item."""
        seen: set[str] = set()
        skip = dict(self.skip)
        rank, world = self.shard
        kept = 0
        index = 0
        for spec in self.specs:
            for path, rel in _expand(spec, self.recursive, self.stdin_lines):
                item = SourceItem(path=path, rel=_unique(rel, seen), kind=source_kind(path))
                if skip.get(path, 0) > 0:
                    skip[path] -= 1
                    selected = False
                else:
                    selected = kept % world == rank
                    kept += 1
                yield index, item, selected
                index += 1

    def __iter__(self) -> Iterator[SourceItem]:
        for _, item, selected in self.walk():
            if selected:
                yield item

    def select(
        self, *, skip: dict[str, int] | None = None, shard: tuple[int, int] = (0, 1)
    ) -> SourcePlan:
        """This plan with `skip` (path -> occurrences done) and `shard` (rank, world)."""
        return replace(self, skip=tuple(sorted((skip or {}).items())), shard=shard)


def plan_sources(specs: list[str], *, recursive: bool = False) -> SourcePlan:
    """Check every spec up front (missing path -> DataError, exit 2) and read stdin once."""
    if not specs:
        raise DataError("no SOURCE given: pass image files, folders, globs, a .txt list or -")
    stdin_lines: tuple[str, ...] = ()
    for spec in specs:
        if not spec.strip():  # Path("") is the current folder: never read it unasked
            raise DataError("an empty SOURCE: name a file, folder, glob, .txt list or - (. for "
                            "the current folder)")  # fmt: skip
        if spec == "-":
            stdin_lines = tuple(_clean_lines(sys.stdin.read().splitlines()))
        elif _is_glob(spec) or is_stream_spec(spec):
            continue
        elif not Path(spec).exists():
            raise DataError(f"no such file or directory: {spec}")
    return SourcePlan(specs=tuple(specs), recursive=recursive, stdin_lines=stdin_lines)


def source_kind(path: str) -> ImageKind:
    """ "stream" (a camera index or URL), "video" (a video file by its suffix) or "image"."""
    if is_stream_spec(path):
        return "stream"
    return "video" if is_video_path(path) else "image"


def count_items(specs: list[str], *, recursive: bool = False) -> int | None:
    """How many inputs `specs` name, walking folders, globs and lists once (no image is read);
    None for stdin (`-`), which is read only once, by the run itself."""
    if "-" in specs:
        return None
    count = 0
    try:
        for item in SourcePlan(specs=tuple(specs), recursive=recursive):
            if item.is_video:  # frames, not one image each: no total to show
                return None
            count += 1
    except (DataError, OSError):
        return None
    return count


def first_item(plan: SourcePlan) -> SourceItem:
    """The first input, or DataError (exit 2) when the sources hold no images at all."""
    for item in plan:
        return item
    raise DataError(f"no images found in {', '.join(plan.specs)}")


def _expand(spec: str, recursive: bool, stdin_lines: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if spec == "-":
        yield from _from_list(stdin_lines, base=Path.cwd())
        return
    path = Path(spec)
    if is_stream_spec(spec):
        yield spec, stream_name(spec)
    elif _is_glob(spec) and not path.exists():
        yield from _from_glob(spec)
    elif path.is_dir():
        yield from _from_dir(path, recursive)
    elif path.suffix.lower() == ".txt":
        yield from _from_list(_read_list(path), base=path.parent)
    else:
        yield str(path), path.name


def _from_dir(root: Path, recursive: bool) -> Iterator[tuple[str, str]]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if not recursive:
            dirs.clear()
        for name in sorted(files):
            full = Path(folder) / name
            if _is_input(full) and full.is_file():  # FIFOs, devices, sockets: skipped
                yield str(full), full.relative_to(root).as_posix()


def _from_glob(pattern: str) -> Iterator[tuple[str, str]]:
    root = _glob_root(pattern)
    for match in sorted(glob.iglob(pattern, recursive=True)):
        full = Path(match)
        if full.is_file() and _is_input(full):
            yield str(full), _relative(full, root)


def _is_input(path: Path) -> bool:
    return is_image_path(path) or is_video_path(path)


def stream_name(spec: str) -> str:
    """The output name of a camera (`camera0`) or a URL (`rtsp_host_path`, no credentials)."""
    if spec.isdigit():
        return f"camera{spec}"
    scheme, _, rest = spec.partition("://")
    rest = rest.rpartition("@")[2]  # user:password@host -> host
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in rest).strip("._")
    return f"{scheme.lower()}_{safe[:80] or 'stream'}"


def _from_list(lines: tuple[str, ...] | list[str], base: Path) -> Iterator[tuple[str, str]]:
    for line in lines:
        if is_stream_spec(line):
            yield line, stream_name(line)
            continue
        path = Path(line)
        if not path.is_absolute() and not path.exists() and (base / path).exists():
            path = base / path
        yield str(path), _safe_rel(line)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(
            f"list file {path} is not a regular file; save the list to a file, or pipe it "
            "to `-` (stdin)"
        )
    try:
        return _clean_lines(path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read list file {path}: {exc}") from exc


def _clean_lines(lines: list[str]) -> list[str]:
    return [s for line in lines if (s := line.strip()) and not s.startswith("#")]


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in GLOB_CHARS)


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if _is_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _safe_rel(text: str) -> str:
    """A list entry's own relative path when it stays inside the output folder, else its name."""
    rel = PurePosixPath(text.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return rel.name or "image"
    return rel.as_posix()


def _unique(rel: str, seen: set[str]) -> str:
    if rel not in seen:
        seen.add(rel)
        return rel
    stem, dot, suffix = rel.rpartition(".")
    if not dot:
        stem, suffix = rel, ""
    index = 2
    while (candidate := f"{stem}_{index}{'.' + suffix if suffix else ''}") in seen:
        index += 1
    seen.add(candidate)
    return candidate
