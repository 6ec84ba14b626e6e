"""torch.distributed helpers: the process group that ``torchrun`` sets up, if any."""

from __future__ import annotations


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
