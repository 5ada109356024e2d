"""torch.distributed for `train` and `detect`: set up from torchrun's environment, or run as one
process.

`torchrun --nproc_per_node=N -m visiontool train|detect ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
we pick NCCL on CUDA and gloo on CPU. Without those variables everything is a single process
and every helper here is a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from visiontool.errors import ConfigError, VisiontoolError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class PeerStopped(VisiontoolError):
    """A collective call failed because another process of the job stopped: that process
    prints why; this one says only that it lost its peers (exit 1, like a failed input)."""

    exit_code = 1


@dataclass(frozen=True)
class _MainFailed:
    """What rank 0 broadcasts in place of a decision when it could not take one."""

    message: str
    exit_code: int


class SharedError(VisiontoolError):
    """Rank 0's error, raised again on the other ranks with its message and exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def process_info() -> DistInfo:
    """This process's place in the job torchrun describes (nothing joined yet); a
    single-process DistInfo otherwise."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: Any) -> DistInfo:
    """Join the process group torchrun describes; a single-process DistInfo otherwise."""
    info = process_info()
    if not info.enabled:
        return info
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            _check_one_gpu_each(info)
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def _check_one_gpu_each(info: DistInfo) -> None:
    """On CUDA each process of a machine takes its own GPU (cuda:LOCAL_RANK): more processes
    than GPUs would end in CUDA's "invalid device ordinal" traceback."""
    import torch

    gpus = torch.cuda.device_count()
    if info.local_rank >= gpus:
        local = os.environ.get("LOCAL_WORLD_SIZE", str(info.local_rank + 1))
        raise ConfigError(
            f"torchrun started {local} processes on this machine but it has {gpus} GPU(s): "
            f"use --nproc_per_node={gpus} (one process a GPU), or --device cpu"
        )


def local_device(device: Any, info: DistInfo) -> Any:
    """Each rank uses its own GPU (cuda:LOCAL_RANK) when running on CUDA."""
    import torch

    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


@contextlib.contextmanager
def _collective(info: DistInfo) -> Iterator[None]:
    """A collective call; a peer that died (gloo's "Connection closed by peer", an NCCL error)
    becomes one line instead of a backend traceback."""
    try:
        yield
    except RuntimeError as exc:  # torch's DistBackendError is a RuntimeError
        raise PeerStopped(
            f"process {info.rank} of {info.world_size}: another process of this torchrun job "
            "stopped (its own message says why)"
        ) from exc


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        with _collective(info):
            dist.barrier()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * info.world_size
    with _collective(info):
        dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank (so all ranks take the same decisions)."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    with _collective(info):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def main_decides(decide: Callable[[], T], info: DistInfo) -> T:
    """`decide()` run on rank 0 only, its result handed to every rank. When it raises a
    VisiontoolError every rank raises it (same message, same exit code), so no process waits
    for an answer that never comes."""
    if not info.enabled:
        return decide()
    if info.is_main:
        try:
            result = decide()
        except VisiontoolError as exc:
            broadcast_object(_MainFailed(str(exc), exc.exit_code), info)
            raise
        return broadcast_object(result, info)
    got = broadcast_object(None, info)
    if isinstance(got, _MainFailed):
        raise SharedError(got.message, got.exit_code)
    return got


def cleanup(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
