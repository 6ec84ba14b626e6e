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


def decided_by_rank_zero(decision: bool, world: int) -> bool:
    """Rank 0's ``decision`` on every process (``decision`` itself for one process): a choice each process makes
    from its own figures, where rounding could tip one of them the other way, is then the same everywhere."""
    if world == 1:
        return decision
    import torch.distributed as dist

    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
