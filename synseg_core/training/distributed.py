"""Process-group set-up and the few collectives the trainer needs; all no-ops in a single process.

``torchrun`` (single node or ``--nnodes`` with a rendezvous endpoint) sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them training runs in one
process and never touches ``torch.distributed``. NCCL is used when the device
is CUDA, gloo on the CPU.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("synseg.train")


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # False when the caller had already initialised the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks, returned on the CPU (the input is untouched)."""
        if not self.enabled:
            return values.detach().cpu().clone()
        total = values.detach().to(self.device, copy=True)  # NCCL reduces device tensors only
        dist.all_reduce(total)
        return total.cpu()

    def gather_rows(self, rows: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's ``rows [n <= size, D]`` (no gradient), padded to ``size``: ``[W * size, D]`` and a mask ``[W * size]``.

        Rank r's rows start at ``r * size``, so a rank finds its own rows there.
        """
        padded = rows.new_zeros(size, *rows.shape[1:])
        padded[: rows.shape[0]] = rows.detach()
        valid = torch.zeros(size, dtype=torch.bool, device=rows.device)
        valid[: rows.shape[0]] = True
        if not self.enabled:
            return padded, valid
        all_rows = [torch.empty_like(padded) for _ in range(self.world_size)]
        all_valid = [torch.empty_like(valid) for _ in range(self.world_size)]
        dist.all_gather(all_rows, padded)
        dist.all_gather(all_valid, valid)
        return torch.cat(all_rows), torch.cat(all_valid)

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value`` (small bookkeeping only), in rank order."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str = "auto", timeout_minutes: float = 30.0) -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment (or one the caller has
    already initialised, which is then left open), or run alone."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if dist.is_initialized():
        return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    rank = dist.get_rank()
    log.info("rank %d/%d (local %d) on %s with %s", rank, world_size, local_rank, device, backend)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device, owns_group=True)
