"""The one registry: kind -> name -> typed spec.

Kinds in use: "model" (`models.specs.ModelSpec`), "backbone" (`BackboneSpec`), "head"
(`HeadSpec`), "format" (`data.formats.FormatSpec`) and "task" (`tasks.spec.TaskSpec`). A spec is
a frozen dataclass that says everything the engine needs to know about one name (how to build
it, its defaults, how to adapt it), as torchvision's `Weights` and timm's `PretrainedCfg` do; the
engine asks the spec and never branches on a name. Registering is explicit (`add(kind, spec)`
at import of the module that defines the spec); the module list per kind is below, loaded on the
first lookup of that kind, so importing the registry does no work and listing needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from visiontool.errors import UnknownName

# Modules whose import registers the members of a kind, loaded on the first lookup of that kind.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "model": (
        "visiontool.models.zoo",
        "visiontool.models.own",
        "visiontool.models.shipped",
        "visiontool.models.recipes",
    ),
    "backbone": ("visiontool.models.backbones",),
    "head": ("visiontool.models.heads",),
    "format": ("visiontool.data.formats",),
    "task": ("visiontool.tasks",),
}


class Spec(Protocol):
    """What the registry needs of a spec: a name and its aliases."""

    @property
    def name(self) -> str: ...

    @property
    def aliases(self) -> tuple[str, ...]: ...


_specs: dict[str, dict[str, Any]] = {}
_aliases: dict[str, dict[str, str]] = {}
_loaded: set[str] = set()


def add(kind: str, spec: Any) -> Any:
    """Register `spec` under `kind`; a name or alias registered twice is an error. Returns
    the spec, so a module can write `SPEC = registry.add("head", HeadSpec(...))`."""
    names = _specs.setdefault(kind, {})
    aliases = _aliases.setdefault(kind, {})
    for key in (spec.name, *spec.aliases):
        if key in names or key in aliases:
            raise ValueError(f"{kind} {key!r} is already registered")
    names[spec.name] = spec
    for alias in spec.aliases:
        aliases[alias] = spec.name
    return spec


def remove(kind: str, name: str) -> None:
    """Unregister `name` (tests that register a throw-away spec clean up with this)."""
    spec = _specs.get(kind, {}).pop(name, None)
    for alias in getattr(spec, "aliases", ()):
        _aliases.get(kind, {}).pop(alias, None)


def _ensure_loaded(kind: str) -> None:
    if kind in _loaded:
        return
    _loaded.add(kind)
    for module in _PROVIDERS.get(kind, ()):
        importlib.import_module(module)


def get(kind: str, name: str) -> Any:
    """The spec registered as `name` (or alias); `UnknownName` with the nearest names
    otherwise."""
    _ensure_loaded(kind)
    specs = _specs.get(kind, {})
    key = _aliases.get(kind, {}).get(name, name)
    if key not in specs:
        visible = [n for n, s in specs.items() if not getattr(s, "hidden", False)]
        raise UnknownName(kind, name, [*visible, *_aliases.get(kind, {})])
    return specs[key]


def exists(kind: str, name: str) -> bool:
    _ensure_loaded(kind)
    return name in _specs.get(kind, {}) or name in _aliases.get(kind, {})


def specs(kind: str) -> list[Any]:
    """All specs of a kind, in registration order."""
    _ensure_loaded(kind)
    return list(_specs.get(kind, {}).values())


def names(kind: str) -> list[str]:
    return [spec.name for spec in specs(kind)]
