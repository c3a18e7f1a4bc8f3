"""A distributed batch sampler indexed by optimisation step.

Global batch ``s`` is made of the sample numbers ``s * B ... s * B + B - 1``; rank ``r`` of ``W`` takes the contiguous
slice ``[r * B/W, (r + 1) * B/W)``. Datasets map a sample number to an item deterministically, so:

- the global batch at step ``s`` is the same whatever the number of ranks (DDP with 2 ranks = 1 process);
- resuming at step ``s`` needs no fast-forwarding: the sampler simply starts there.

This replaces ``torch.utils.data.DistributedSampler`` (which shards per epoch and cannot start mid-epoch).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler

__all__ = ["StepBatchSampler"]


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's list of sample numbers for steps ``start_step ... max_steps - 1``.

    Args:
        batch_size: global batch size, divisible by ``world_size``.
        max_steps: last step (exclusive).
        start_step: first step (resume point).
        rank: this process's rank.
        world_size: number of processes.

    Raises:
        ValueError: ``batch_size`` not divisible by ``world_size``, or a bad rank.
    """

    def __init__(self, batch_size: int, max_steps: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be at least 1, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the number of DDP processes "
                             f"({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batch_size, self.max_steps, self.start_step = batch_size, max_steps, start_step
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            first = step * self.batch_size + self.offset
            yield list(range(first, first + self.local))
