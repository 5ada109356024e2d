"""Everything `--resume` needs, as plain data that `torch.load(weights_only=True)` accepts.

Random-number states (Python, NumPy, torch, CUDA) are stored as lists and tensors rather than
pickled objects, so a training checkpoint is still data, not code. Augmentation draws from a
per-sample seed (`SeededSamples`), so it needs no saved state at all.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
         nps["cached"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # GPU by GPU, as many as both machines have: a checkpoint of an 8-GPU machine resumes
        # on a 1-GPU one (set_rng_state_all would index past the GPUs present)
        for index, gpu_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one training sample's augmentation: a function of the run's seed, the epoch
    and the sample alone, so it is the same whichever worker loads the sample, however many
    workers there are, and whether or not the epoch was resumed part-way."""
    import numpy as np

    words = np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1] & 0x7FFFFFFF) << 32)


class SeededSamples:
    """A map-style dataset whose item `i` is drawn under its own RNG seed (`sample_seed`).

    Random augmentation draws from the global Python/NumPy/torch generators. In DataLoader
    workers those are seeded per worker, so a sample's augmentation depended on which worker
    loaded it and what that worker loaded before: resuming mid-epoch (which skips batches and
    so shifts every batch to another worker) changed every later augmentation. Seeding each
    item from (seed, epoch, index) makes augmentation a property of the sample; the global
    generators are restored afterwards, so the main process's random stream is unaffected.
    The sampler's keys are (epoch, index) pairs (`trainer.ResumableSampler`), so persistent
    worker processes, whose copy of this object keeps the epoch it was forked with, seed by the
    right epoch; a bare index uses `epoch` (set before each epoch in the main process).
    """

    def __init__(self, dataset: Any, seed: int, *, with_keys: bool = False) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        self.with_keys = with_keys

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, int(key))
        if self.with_keys:  # augmented later, on the device (`device_augment`)
            return (*self.dataset[index], (epoch, index))
        with seeded(sample_seed(self.seed, epoch, index)):
            return self.dataset[index]


@contextlib.contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """Python's, NumPy's and torch's generators (and `device`'s, a CUDA one) seeded with
    `seed` inside, restored after: the caller's random streams are unaffected."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device] if device is not None and getattr(device, "type", "") == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
