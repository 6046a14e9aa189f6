"""Distributed evaluation: each rank scores a shard of the images; confusion matrices are summed exactly.

Works under ``torchrun`` with the gloo backend (CPU) or NCCL (one GPU per
process: ``cuda`` means ``cuda:LOCAL_RANK``). Counts are int64, so the reduced
matrix, and every metric computed from it, is identical to a single-process run.
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
    device: torch.device = torch.device("cpu")  # this rank's model device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def indices(self, total: int) -> range:
        """This rank's images: every ``world_size``-th starting at ``rank`` (balanced to within one image)."""
        return range(self.rank, total, self.world_size)


def local_device(device: str, local_rank: int) -> torch.device:
    """``cuda`` without an index is this process's own GPU, ``cuda:LOCAL_RANK``, so torchrun's ranks never
    all share GPU 0; an explicit index (``cuda:1``) and other devices are kept as given."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", local_rank)
    return resolved


def init_from_environment(device: str = "cpu") -> Shard:
    """Join the process group ``torchrun`` describes in the environment (NCCL for a CUDA ``device``, else
    gloo); a single process needs none."""
    resolved = local_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard(device=resolved)
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)  # NCCL binds each process to its current device
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return Shard(rank=dist.get_rank(), world_size=dist.get_world_size(), device=resolved)


def reduction_device(backend: str, device: torch.device) -> torch.device:
    """Where a tensor must be for ``backend`` to all-reduce it: NCCL reduces GPU tensors only, gloo CPU ones."""
    return device if backend == "nccl" else torch.device("cpu")


def reduce_confusion(confusion: np.ndarray, shard: Shard) -> np.ndarray:
    """Sum of every rank's [C, C] int64 confusion matrix (the input itself when single-process)."""
    if shard.world_size == 1:
        return confusion
    total = torch.from_numpy(np.ascontiguousarray(confusion, dtype=np.int64))
    total = total.to(reduction_device(dist.get_backend(), shard.device))
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu().numpy()


def finish(shard: Shard) -> None:
    if shard.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
