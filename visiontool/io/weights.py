"""Pretrained weight files: where torchvision caches them and whether they can be fetched.

torchvision downloads weights into `$TORCH_HOME/hub/checkpoints` on first use. Before asking it
to, we check the cache and, if the file is missing, whether the download host answers at all,
so an offline machine gets a one-line error at once instead of a hang or a traceback.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from visiontool.errors import ModelLoadError

OFFLINE_ENV = "VISIONTOOL_OFFLINE"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_kind(weights: object) -> str:
    """Classify a --weights value: 'default' (the model's own pretrained weights), 'none'
    (random init) or 'path' (a checkpoint or state-dict file)."""
    if weights is None or str(weights).lower() in ("none", "random"):
        return "none"
    if str(weights).upper() == "DEFAULT":
        return "default"
    return "path"


def cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: `torch.hub.get_dir()/checkpoints`.

    While torch.hub is not imported (`visiontool models`), the same folder is found the way
    torch.hub finds it, without importing torch: `$TORCH_HOME/hub`, where TORCH_HOME defaults
    to `$XDG_CACHE_HOME/torch`, itself defaulting to `~/.cache/torch`. (Only
    `torch.hub.set_dir` could make them differ, and that needs torch.hub imported.)
    """
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir()) / "checkpoints"
    xdg = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(home) / "hub" / "checkpoints"


def cached_path(url: str) -> Path:
    return cache_dir() / Path(urlparse(url).path).name


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the URL's host opens within `timeout` seconds."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_downloadable(url: str, *, model: str, flag: str = "--weights") -> Path:
    """Return the cache path of `url`; raise ModelLoadError if it is missing and unreachable.
    `flag` is the option that asked for these weights, named in the hint."""
    path = cached_path(url)
    if path.is_file() or host_reachable(url):
        return path
    raise ModelLoadError(
        f"pretrained weights for {model!r} are not cached and the network is unreachable: "
        f"download {url} to {path} on a machine with internet access, "
        f"or pass {flag} PATH (a local file) or {flag} none (random init)"
    )
