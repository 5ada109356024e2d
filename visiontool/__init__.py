"""visiontool: image classification and object detection from the command line and Python.

Every CLI action is a Python call: `predict` (a stream of results, no files), `detect`,
`train`, `evaluate`, each with its config dataclass (docs/api.md).

Importing the package is cheap: torch and torchvision load only when a model is built.
Public entry points are resolved lazily (PEP 562) so `import visiontool` stays fast in scripts.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module" (same name there) or "module:attribute"; see docs/api.md
_LAZY = {
    "predict": "visiontool.engine.predict.pipeline",
    "detect": "visiontool.engine.predict.detect:run_detect",
    "DetectConfig": "visiontool.engine.predict.detect",
    "DetectSummary": "visiontool.engine.predict.detect",
    "train": "visiontool.engine.train.trainer:run_train",
    "TrainConfig": "visiontool.engine.train.trainer",
    "evaluate": "visiontool.engine.evaluate.run:run_eval",
    "EvalConfig": "visiontool.engine.evaluate.run",
    "ImageResult": "visiontool.results",
    "Detection": "visiontool.results",
    "ClassScore": "visiontool.results",
    "load_model": "visiontool.models.factory",
    "LoadedModel": "visiontool.models.factory",
    "read_image": "visiontool.io.images",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'visiontool' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute or name)


def __dir__() -> list[str]:
    return sorted(__all__)
