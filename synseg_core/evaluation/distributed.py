"""Distributed evaluation: each rank scores a shard of the images; confusion matrices are summed exactly.

Works under ``torchrun`` with the gloo backend (CPU) or NCCL. Counts are int64,
so the reduced matrix, and every metric computed from it, is identical to a
single-process run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def indices(self, total: int) -> range:
        """This rank's images: every ``world_size``-th starting at ``rank`` (balanced to within one image)."""
        return range(self.rank, total, self.world_size)


def init_from_environment(backend: str = "gloo") -> Shard:
    """Join the process group ``torchrun`` describes in the environment; a single process needs none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Shard(rank=dist.get_rank(), world_size=dist.get_world_size())


def reduce_confusion(confusion: np.ndarray, shard: Shard) -> np.ndarray:
    """Sum of every rank's [C, C] int64 confusion matrix (the input itself when single-process)."""
    if shard.world_size == 1:
        return confusion
    total = torch.from_numpy(np.ascontiguousarray(confusion, dtype=np.int64))
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.numpy()


def finish(shard: Shard) -> None:
    if shard.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
