"""Output-folder naming: runs/<command>/exp, exp2, exp3... never overwriting an earlier run."""

from __future__ import annotations

from pathlib import Path


def run_dir(out: Path | None, command: str, *, exist_ok: bool = False) -> Path:
    """Where a command writes: `out` as given, else the next free runs/<command>/exp{,2,...}
    (created). The one place that names default output folders, for the CLI and the engine."""
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
