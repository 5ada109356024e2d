"""Output folders: naming, safety checks, locking and clean-up of a previous run's files.

Every command that writes goes through `prepare_out` before it loads a model or reads data:

- `out=None` claims the next free `runs/<command>/exp{,2,3...}` (always fresh; with `exist_ok`,
  `runs/<command>/exp` is reused like an explicit `--out`).
- An output folder that is, or contains, an input, or lies inside a folder read recursively, is
  refused (`ConfigError`, exit 2): a run must never overwrite its inputs or read its own outputs.
- An explicit `--out` that exists and is not empty is refused unless `exist_ok`; with it, the
  files the same command wrote there before (`owned`: known names and layouts, never anything
  else) are removed, so old and new results never mix, and the caller is told what was
  replaced. With `clear_later`, that happens only when the run calls `OutDir.clear_previous`,
  once its model, data and options are checked: a run that fails before (a typo in --model)
  leaves the earlier results where they were.
- The folder is locked (`.visiontool.lock`, an exclusive `flock` held for the run's life and
  removed at the end; the kernel drops the lock of a dead process, so a stale file never
  blocks). A second run into the same folder exits 2 naming the first (pid and command).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from visiontool.errors import ConfigError

LOCK_NAME = ".visiontool.lock"

Owned = Iterable[str | Callable[[Path], Iterable[str]]]
"""Files a command owns in its output folder: glob patterns relative to the folder (`**`
allowed), or callables returning relative paths (e.g. read from the previous run's record)."""


def run_dir(out: Path | None, command: str, *, exist_ok: bool = False) -> Path:
    """Where a command writes: `out` as given, else the next free runs/<command>/exp{,2,...}
    (created). Naming only: commands use `prepare_out`, which also checks and locks."""
    if out is not None:
        return Path(out)
    return increment_dir(Path("runs") / command / "exp", exist_ok=exist_ok)


def increment_dir(base: Path, *, exist_ok: bool = False) -> Path:
    """Create and return `base`, or the first free `base2`, `base3`... (claimed with mkdir, so
    two runs started together never share a folder). With `exist_ok`, `base` is reused."""
    base.parent.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        base.mkdir(exist_ok=True)
        return base
    index = 1
    while True:
        candidate = base if index == 1 else base.with_name(f"{base.name}{index}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            index += 1


class OutDir:
    """A prepared, locked output folder. Use as a context manager (or call `release`): the
    lock file is removed at the end, and a folder this run created is removed again when the
    run fails before writing anything into it."""

    def __init__(self, path: Path, *, created: bool, fd: int | None, replaced: list[str]) -> None:
        self.path = path
        self.created = created
        self.replaced = replaced
        self._fd = fd
        self._previous: tuple[Owned, str, Callable[[str], None] | None] | None = None
        atexit.register(self.release)

    def clear_previous(self, *, written_since: float | None = None) -> list[str]:
        """Remove the earlier run's files that `prepare_out(..., clear_later=True)` left in
        place; the run calls it once everything is checked, before its first write, or (with
        `written_since`, a time.time()) at its end, sparing the files it wrote since then.
        Returns what was removed (no-op when there was nothing, or after the first call)."""
        if self._previous is None:
            return self.replaced
        (owned, command, on_log), self._previous = self._previous, None
        spare = None
        if written_since is not None:
            spare = lambda path: path.stat().st_mtime >= written_since  # noqa: E731
        self.replaced = remove_owned(self.path, owned, spare=spare)
        if on_log is not None:
            if self.replaced:
                on_log(
                    f"--exist-ok: replacing {len(self.replaced)} file(s) of an earlier "
                    f"`{command}` run in {self.path} ({_preview(self.replaced)}); other files "
                    "there are kept"
                )
            else:
                on_log(f"--exist-ok: writing into {self.path}; its other files are kept")
        return self.replaced

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.release(failed=exc_type is not None)

    def __fspath__(self) -> str:
        return str(self.path)

    def release(self, *, failed: bool = False) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            (self.path / LOCK_NAME).unlink()  # unlinked while still held: no one can slip in
        with contextlib.suppress(OSError):
            os.close(fd)
        atexit.unregister(self.release)
        if failed and self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty


def prepare_out(
    out: str | Path | None,
    command: str,
    *,
    exist_ok: bool = False,
    inputs: Iterable[str | Path] = (),
    recursive_inputs: Iterable[str | Path] = (),
    owned: Owned = (),
    on_log: Callable[[str], None] | None = None,
    clear_later: bool = False,
    holds_run: Callable[[Path], bool] | None = None,
) -> OutDir:
    """Check, create and lock the output folder of `command`; see the module docstring.

    `inputs` are files (or folders read without descending) the run reads; `recursive_inputs`
    are folders read with everything below them. `holds_run(folder)`: whether the folder holds
    an earlier run of `command`; without one, files there named like its outputs are a user's
    (or another command's) and --exist-ok refuses rather than replace them. Raises
    `ConfigError` (exit 2) naming the folder and what to do; nothing is created or removed
    when it does.
    """
    inputs, recursive_inputs = list(inputs), list(recursive_inputs)
    explicit = out is not None or exist_ok
    if out is None:
        base = Path("runs") / command / "exp"
        if exist_ok:
            out = base
        else:  # a fresh folder, always empty
            path = _claim(base)
            try:
                check_inputs(path, inputs, recursive_inputs)
            except ConfigError:
                path.rmdir()
                raise
            return OutDir(path, created=True, fd=_lock(path, command), replaced=[])
    path = Path(out)
    check_out_dir(path, command, exist_ok=True, inputs=inputs, recursive_inputs=recursive_inputs)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create --out {path}: {_reason(exc)}; pick a writable folder"
        ) from None
    fd = _lock(path, command)
    handle = OutDir(path, created=created, fd=fd, replaced=[])
    try:
        if explicit and not created:
            leftovers = [p.name for p in path.iterdir() if p.name != LOCK_NAME]
            if leftovers and not exist_ok:
                raise ConfigError(_not_empty(path, command, leftovers))
            if leftovers and holds_run is not None and not holds_run(path):
                named = [p.relative_to(path).as_posix() for p in find_owned(path, owned)]
                if named:
                    raise ConfigError(
                        f"--out {path} holds files named like `{command}` outputs "
                        f"({_preview(named)}) but no earlier `{command}` run: --exist-ok "
                        "replaces only such a run's own files; move them, or choose another --out"
                    )
            if leftovers:
                handle._previous = (owned, command, on_log)
                if not clear_later:
                    handle.clear_previous()
    except BaseException:
        handle.release(failed=True)
        raise
    return handle


def check_out_dir(
    out: str | Path | None,
    command: str,
    *,
    exist_ok: bool = False,
    inputs: Iterable[str | Path] = (),
    recursive_inputs: Iterable[str | Path] = (),
    has_exist_ok: bool = True,
) -> None:
    """The checks of `prepare_out` that need no writing (a file, inside the inputs, not empty
    without `exist_ok`), for commands that claim their folder only once results are ready:
    they call this first, before reading data, so a doomed run fails at once. A command
    without an --exist-ok option (`has_exist_ok=False`) is not told to pass one."""
    if out is None:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"--out {path} is a file, not a folder; give a folder (it is created if missing)"
        )
    check_inputs(path, inputs, recursive_inputs)
    if not exist_ok and path.is_dir():
        try:
            leftovers = [p.name for p in path.iterdir() if p.name != LOCK_NAME]
        except OSError as exc:
            raise ConfigError(f"cannot read --out {path}: {_reason(exc)}") from None
        if leftovers:
            raise ConfigError(_not_empty(path, command, leftovers, has_exist_ok=has_exist_ok))


def _not_empty(path: Path, command: str, leftovers: list[str], *, has_exist_ok: bool = True) -> str:
    if not has_exist_ok:
        return (
            f"--out {path} already exists and is not empty ({_preview(leftovers)}); {command} "
            "writes only into a new or empty folder: choose a new folder, or empty this one first"
        )
    return (
        f"--out {path} already exists and is not empty ({_preview(leftovers)}); pass "
        f"--exist-ok to replace the files of the earlier `{command}` run there, or choose a "
        "new folder"
    )


def check_inputs(
    out: Path, inputs: Iterable[str | Path], recursive_inputs: Iterable[str | Path]
) -> None:
    """`ConfigError` when `out` is, or contains, an input, or lies inside a folder read
    recursively: the run would overwrite its inputs or read its own outputs."""
    target = resolve_path(out)
    parents_cache: dict[Path, Path] = {}
    for raw in inputs:
        item = Path(raw)
        parent = parents_cache.get(item.parent)
        if parent is None:
            parent = parents_cache.setdefault(item.parent, resolve_path(item.parent))
        resolved = parent / item.name if item.name not in ("", ".", "..") else resolve_path(item)
        resolved = resolve_path(resolved) if resolved.is_symlink() else resolved
        if resolved == target or target in resolved.parents:
            raise ConfigError(
                f"--out {out} is, or contains, the input {raw}: outputs would overwrite or mix "
                "with the inputs; choose an output folder outside the inputs"
            )
    for raw in recursive_inputs:
        resolved = resolve_path(Path(raw))
        if resolved == target or target in resolved.parents or resolved in target.parents:
            raise ConfigError(
                f"--out {out} lies inside (or contains) {raw}, which is read with everything "
                "below it: the run would read its own outputs; choose an output folder "
                f"outside {raw}"
            )


def remove_owned(
    folder: Path, owned: Owned, *, spare: Callable[[Path], bool] | None = None
) -> list[str]:
    """Remove the files `owned` names inside `folder` (regular files and links only, never
    following links out of it), but those `spare` says to keep; prune folders left empty.
    Returns the removed paths, relative."""
    found = find_owned(folder, owned, spare=spare)
    removed = []
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.relative_to(folder).as_posix())
    for path in sorted({p.parent for p in found}, key=lambda p: -len(p.parts)):
        while path != folder and folder in path.parents:
            try:
                path.rmdir()
            except OSError:
                break
            path = path.parent
    return removed


def args_record(folder: Path) -> dict:
    """The folder's args.json (what a train or detect run records), {} when absent or not a
    JSON object: evidence of which command's run a folder holds."""
    import json

    try:
        data = json.loads((folder / "args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_owned(
    folder: Path, owned: Owned, *, spare: Callable[[Path], bool] | None = None
) -> list[Path]:
    """The files `owned` names inside `folder` (regular files and links, none reached through
    a link out of it), less those `spare` keeps; sorted."""
    root = resolve_path(folder)
    found: set[Path] = set()
    for entry in owned:
        if callable(entry):
            names = list(entry(folder))
            candidates = [folder / name for name in names]
        elif any(ch in entry for ch in "*?["):
            candidates = list(folder.glob(entry))
        else:
            candidates = [folder / entry]
        for candidate in candidates:
            if candidate.name == LOCK_NAME or not (candidate.is_symlink() or candidate.is_file()):
                continue
            if (
                resolve_path(candidate.parent) != root
                and root not in resolve_path(candidate.parent).parents
            ):
                continue  # never outside the folder
            if spare is not None and spare(candidate):
                continue
            found.add(candidate)
    return sorted(found)


def _claim(base: Path) -> Path:
    try:
        return increment_dir(base)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {base}: {_reason(exc)}; pass --out with a writable folder"
        ) from None


def _lock(path: Path, command: str) -> int | None:
    """Take the folder's exclusive lock; `ConfigError` naming the holder when it is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        return None
    lock = path / LOCK_NAME
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot write into --out {path}: {_reason(exc)}; pick a writable folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 400).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(f"cannot lock --out {path}: {_reason(exc)}") from None
            who = f" ({holder})" if holder else ""
            raise ConfigError(
                f"--out {path} is in use by another visiontool run{who}; wait for it to "
                "finish or choose another folder"
            ) from None
        try:  # the holder before us may have removed the file: lock the current one
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        args = " ".join(sys.argv[1:])[:200] or command
        os.write(fd, f"pid {os.getpid()}: visiontool {args}\n".encode())
        return fd
    raise ConfigError(f"cannot lock --out {path}: it keeps changing; try again")


class WriteGuard:
    """Refuses a write whose folder resolves outside `root`: a link planted inside --out (say
    `labels -> /elsewhere`) must not carry a run's files out of it. Folders checked once."""

    def __init__(self, root: Path) -> None:
        self.root = resolve_path(root)
        self._checked: set[Path] = set()

    def check(self, target: Path) -> Path:
        parent = target.parent
        if parent not in self._checked:
            real = resolve_path(parent)
            if real != self.root and self.root not in real.parents:
                raise ConfigError(
                    f"{parent} leads outside the output folder {self.root} (through a link): "
                    "nothing is written through it; remove the link or choose another --out"
                )
            self._checked.add(parent)
        return target


def resolve_path(path: Path) -> Path:
    """`path` with links and `..` resolved, or made absolute when it cannot be (a link loop,
    a folder we may not read): the form paths are compared in."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def _preview(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
