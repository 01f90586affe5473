"""This process's place in a ``torch.distributed`` job (torchrun), or a job of one."""

from __future__ import annotations

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process of the job; nothing to wait for in a job of one."""
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()
