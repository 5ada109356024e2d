"""visiontool checkpoints: a state_dict plus the metadata that rebuilds the model (design.md).

Checkpoints are data, not code: they are read with `torch.load(weights_only=True)` and contain
only tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from visiontool import __version__
from visiontool.errors import ModelLoadError
from visiontool.io.atomic import atomic_write

FORMAT = "visiontool-checkpoint"
FORMAT_VERSION = 1


def make_checkpoint(state_dict: dict[str, Any], model_info: dict[str, Any], **extra: Any) -> dict:
    """Assemble the checkpoint dict; `extra` carries training state (optimizer, epoch, args...)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "visiontool_version": __version__,
        "model_info": model_info,
        "state_dict": state_dict,
        **extra,
    }


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def is_visiontool_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def read_checkpoint(path: str | Path) -> Any:
    """Load a weights file safely. Raises `ModelLoadError` with one clear line on failure."""
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder: --weights takes a weights file (.pt)")
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file is empty: {path}")
    if not zipfile.is_zipfile(path) and not _looks_like_pickle(path):
        raise ModelLoadError(f"{path} is not a readable PyTorch checkpoint (not a torch.save file)")
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickles: the error says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {match.group(1)}" if match else "it holds more than plain data"
        raise ModelLoadError(
            f"{path} was refused by weights_only loading: {what}; visiontool loads checkpoints "
            "as data, never code (re-save the state_dict alone)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path} is not a readable PyTorch checkpoint ({first})") from exc


def _looks_like_pickle(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(1) == b"\x80"  # pickle protocol 2+ (legacy torch.save)


def extract_state_dict(obj: Any, path: str | Path) -> dict[str, Any]:
    """The state_dict inside a loaded file: ours, torchvision-reference style or a bare one."""
    import torch

    if is_visiontool_checkpoint(obj):
        inner = obj.get("state_dict")
        if not isinstance(inner, dict) or not inner or not _all_tensors(inner, torch):
            raise ModelLoadError(
                f"{path}: its 'state_dict' is missing or not a mapping of names to tensors; "
                "the checkpoint was edited or is damaged: retrain or re-export it"
            )
        return inner
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and _all_tensors(inner, torch):
                return inner
        if obj and _all_tensors(obj, torch):
            return obj
    raise ModelLoadError(f"{path} holds no state_dict (expected a dict of tensors)")


def _all_tensors(mapping: dict, torch: Any) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())
