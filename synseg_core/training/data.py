"""The training data stream: the caption sources of ``synseg_core.data.captions`` split over ranks and workers.

Every (rank, DataLoader worker) pair is one *slot* of ``world_size * num_workers``.
A JSONL manifest deals the epoch's seeded permutation round-robin to the slots (a
distributed sampler without padding); tar shards are dealt whole, one in every
``world_size * num_workers``. Each record therefore belongs to exactly one slot:
no duplicates, no gaps.

The stream is endless (epoch after epoch) and resumable mid-epoch. Each slot's
position is kept; and because a DataLoader always asks its worker 0 first, the
slots are rotated on resume so that the slot that was due next is read first:
the batches after a resume are exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from synseg_core.data.captions import CaptionBatch, CaptionLoader, JsonlCaptions, ResizeToTensor, TarCaptions
from synseg_core.text.categories import CategoryExtractor

log = logging.getLogger("synseg.train")


class _RankSplit:
    """Mixin for a ``CaptionStream``: DataLoader worker ``w`` of rank ``r`` reads slot ``r * W + (w + offset) % W``."""

    rank = 0
    world_size = 1
    worker_offset = 0

    def _records(self, worker: int, num_workers: int, start: int) -> Iterator[Any]:
        slot = (worker + self.worker_offset) % num_workers
        return super()._records(self.rank * num_workers + slot, self.world_size * num_workers, start)  # type: ignore[misc]


class RankedJsonlCaptions(_RankSplit, JsonlCaptions):
    """A JSONL manifest split over ranks and workers."""


class RankedTarCaptions(_RankSplit, TarCaptions):
    """Webdataset tar shards split over ranks and workers."""


class TrainingStream:
    """Endless per-rank batches of ``batch_size`` images from a manifest or shards, with an exact resume position.

    ``state_dict()`` / ``load_state_dict()`` carry the epoch, each slot's position and the
    slot due next; ``stats`` counts samples and skipped bad records of this rank.
    """

    def __init__(self, source: str, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int,
                 num_workers: int, seed: int, max_categories: int, category_backend: str, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> None:
        kwargs: dict[str, Any] = {
            "transform": ResizeToTensor(image_size, mean, std),
            "extractor": CategoryExtractor(max_categories, backend=category_backend),
            "shuffle": True,
            "seed": seed,
        }
        self.dataset: RankedJsonlCaptions | RankedTarCaptions
        if source.endswith(".jsonl"):
            self.dataset = RankedJsonlCaptions(source, **kwargs)
            units, what = len(self.dataset.offsets), "records"
        else:
            self.dataset = RankedTarCaptions(source, **kwargs)
            units, what = len(self.dataset.shards), "shards"
        self.dataset.rank, self.dataset.world_size = rank, world_size
        self.slots = max(1, num_workers)
        if units < self.slots * world_size:
            raise ValueError(
                f"{source}: {units} {what} cannot feed {world_size} rank(s) x {self.slots} data worker(s); "
                f"lower data.num_workers or provide at least {self.slots * world_size} {what}"
            )
        self.loader = CaptionLoader(self.dataset, batch_size, num_workers, pin_memory=pin_memory)
        self.slot_positions: list[int] | None = None  # records consumed per slot this epoch; None = epoch start
        self.next_slot = 0
        self._offset = 0

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.loader.stats

    def __iter__(self) -> Iterator[CaptionBatch]:
        while True:
            mid_epoch = self.slot_positions is not None
            self._offset = self.next_slot if mid_epoch else 0
            self.dataset.worker_offset = self._offset
            self.loader.positions = self._to_workers(self.slot_positions) if mid_epoch else None
            for batch in self.loader:
                self.next_slot = (batch.worker + self._offset + 1) % self.slots
                self.slot_positions = self._to_slots(self.loader.positions)
                yield batch
            self.slot_positions, self.next_slot = None, 0

    def _to_workers(self, slot_positions: list[int] | None) -> list[int]:
        assert slot_positions is not None
        return [slot_positions[(w + self._offset) % self.slots] for w in range(self.slots)]

    def _to_slots(self, worker_positions: list[int] | None) -> list[int]:
        assert worker_positions is not None
        slots = [0] * self.slots
        for worker, position in enumerate(worker_positions):
            slots[(worker + self._offset) % self.slots] = position
        return slots

    def state_dict(self) -> dict[str, Any]:
        state = self.loader.state_dict()
        state["positions"] = self.slot_positions
        state["next_slot"] = self.next_slot
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self.slot_positions = None if state["positions"] is None else list(state["positions"])
        self.next_slot = int(state["next_slot"])

    def start_new_epoch(self, epoch: int) -> None:
        """Begin ``epoch`` from its start (used when a saved position cannot be mapped onto this run)."""
        self.loader.set_epoch(epoch)
        self.slot_positions, self.next_slot = None, 0

