"""Exceptions raised by the engine.

The engine never exits or prints; it raises one of these. `visiontool.cli.main` is the one place
that turns them into a one-line message and an exit code (see design.md):
2 for usage and data-set problems, 3 for models and weights that cannot be loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VisiontoolError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 2


class ConfigError(VisiontoolError):
    """A bad option value or combination of options."""


class DataError(VisiontoolError):
    """An input path or data set that cannot be read as a whole (missing, empty, malformed)."""


class UnknownName(ConfigError):
    """A name that is not in the registry; the message suggests the nearest ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f"known: {', '.join(known)}" if len(known) <= 30 else ""
        tail = "; ".join(part for part in (hint, listing) if part)
        super().__init__(f"unknown {kind} {name!r}" + (f" ({tail})" if tail else ""))
        self.kind = kind
        self.name = name
        self.suggestions = close


class ModelLoadError(VisiontoolError):
    """A model or its weights could not be built or loaded (missing file, offline, mismatch)."""

    exit_code = 3


class ImageError(VisiontoolError):
    """One image could not be decoded. Runs report it per image and carry on."""
