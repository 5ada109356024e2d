"""The one registry: kind -> name -> builder plus metadata.

Kinds in use: "model" (detectors and classifiers by name), "backbone", "head", "reader",
"writer". Registering is a decorator on a builder, as in timm; listing needs no torch because
builders import their heavy dependencies inside their bodies.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from visiontool.errors import UnknownName

# Modules whose import registers the members of a kind. Loaded on first lookup of that kind,
# so importing the registry itself does no work.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "model": ("visiontool.models.zoo", "visiontool.models.custom", "visiontool.models.shipped"),
    "backbone": ("visiontool.models.backbones",),
    "head": ("visiontool.models.heads",),
    "reader": ("visiontool.data.formats",),
    "writer": ("visiontool.data.formats",),
}


@dataclass(frozen=True)
class Entry:
    """One registered name. `meta` holds kind-specific metadata (task, classes, input size...)."""

    kind: str
    name: str
    builder: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


_entries: dict[str, dict[str, Entry]] = {}
_aliases: dict[str, dict[str, str]] = {}
_loaded: set[str] = set()


def register(
    kind: str, name: str, *, aliases: tuple[str, ...] = (), **meta: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `builder` under `kind`/`name`. Duplicate names are an error."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        add(Entry(kind=kind, name=name, builder=builder, aliases=tuple(aliases), meta=dict(meta)))
        return builder

    return decorator


def add(entry: Entry) -> None:
    """Register a ready-made entry (for entries built in a loop)."""
    names = _entries.setdefault(entry.kind, {})
    aliases = _aliases.setdefault(entry.kind, {})
    for key in (entry.name, *entry.aliases):
        if key in names or key in aliases:
            raise ValueError(f"{entry.kind} {key!r} is already registered")
    names[entry.name] = entry
    for alias in entry.aliases:
        aliases[alias] = entry.name


def _ensure_loaded(kind: str) -> None:
    if kind in _loaded:
        return
    _loaded.add(kind)
    for module in _PROVIDERS.get(kind, ()):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def get(kind: str, name: str) -> Entry:
    """Look a name (or alias) up; raise `UnknownName` with the nearest matches otherwise."""
    _ensure_loaded(kind)
    entries = _entries.get(kind, {})
    key = _aliases.get(kind, {}).get(name, name)
    if key not in entries:
        raise UnknownName(kind, name, [*entries, *_aliases.get(kind, {})])
    return entries[key]


def exists(kind: str, name: str) -> bool:
    _ensure_loaded(kind)
    return name in _entries.get(kind, {}) or name in _aliases.get(kind, {})


def entries(kind: str) -> list[Entry]:
    """All entries of a kind, in registration order."""
    _ensure_loaded(kind)
    return list(_entries.get(kind, {}).values())


def names(kind: str) -> list[str]:
    return [entry.name for entry in entries(kind)]
