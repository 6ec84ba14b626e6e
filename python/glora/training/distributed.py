"""torch.distributed helpers: the process group that ``torchrun`` sets up, if any."""

from __future__ import annotations

import torch


def process_group() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    """Wait for every process (a no-op for one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def mean_over_processes(value: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``value`` over every process (``value`` itself for one process): each process then sees the same
    figure, and decides the same way on it."""
    if world == 1:
        return value
    import torch.distributed as dist

    total = value.clone()
    dist.all_reduce(total)  # a sum: the gloo backend has no average
    return total / world
