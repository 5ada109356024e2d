"""Models: specs and builders. `create_model(name, *, weights, num_classes, **arch)` is the one
front door (`load_model` wraps it for inference); the registry holds a typed spec per name.

Layout: `specs.py` (ModelSpec, HeadSpec, BackboneSpec), `factory.py` (create_model,
load_model), `zoo.py` (torchvision's pretrained models), `own.py` (LeNet and the entries
checkpoints rebuild from), `shipped.py` (models trained by this project), `heads/` (one module
per detection head), `backbones.py`, `compose.py` (backbone x head), `classifiers.py`,
`finetune.py` (freezing, parameter groups), `lenet.py`, `fusion.py`, `parts.py`.
Importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_model": "visiontool.models.factory",
    "load_model": "visiontool.models.factory",
    "LoadedModel": "visiontool.models.factory",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'visiontool.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
