"""visiontool: image classification and object detection from the command line and Python.

Importing the package is cheap: torch and torchvision load only when a model is built.
Public entry points are resolved lazily so `import visiontool` stays fast in scripts.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "detect": "visiontool.engine.predict.detect:run_detect",
    "DetectConfig": "visiontool.engine.predict.detect",
    "load_model": "visiontool.models.loader",
    "LoadedModel": "visiontool.models.loader",
    "read_image": "visiontool.io.images",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'visiontool' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute or name)
