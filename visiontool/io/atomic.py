"""Atomic file writes: a killed run never leaves a half-written JSON or checkpoint behind."""

from __future__ import annotations

import errno
import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(fileobj)` on a temp file in the target folder, then rename it into place."""
    path = Path(path)
    if not path.is_symlink() and path.exists() and not path.is_file():
        raise FileExistsError(  # a device (/dev/null), a pipe or a folder: never replaced
            errno.EEXIST, "exists and is not a regular file (not replaced)", str(path)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """Write `data` as JSON atomically."""
    payload = json.dumps(data, indent=indent, allow_nan=False).encode() + b"\n"
    return atomic_write(path, lambda handle: handle.write(payload))


def write_bytes(path: str | Path, payload: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(payload))
