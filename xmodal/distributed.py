"""torchrun helpers with explicit arguments (no module-level rank)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "cleanup_distributed", "init_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU raises ValueError."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if kind == "cpu":
        return torch.device("cpu")
    raise ValueError(f"train.device must be 'auto', 'cpu' or 'cuda', got {kind!r}")


def init_distributed(device: str) -> DistInfo:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the process group.

    Uses nccl on CUDA and gloo on CPU. Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing is initialised.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        initialized_here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, initialized_here)


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` joined it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()
