"""How big and how costly a model is: parameters, FLOPs and (for `models info`) what each
feature map sees.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on a real forward pass, so
whatever the model runs (convolutions, matmuls, attention) is counted as torch dispatches it,
not estimated from layer shapes. Convention: one multiply-add = 2 FLOPs, as torch counts them
(papers that quote "FLOPs" for multiply-adds give half these numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs (2 x multiply-adds) of everything `run()` computes; `run` is called once, under
    `torch.no_grad()` unless it enables grad itself."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return int(counter.get_total_flops())
