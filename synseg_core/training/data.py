"""The training data stream: a caption source of ``synseg_core.data.captions`` for one rank, endlessly.

The source splits every epoch over ``world_size * num_workers`` shares (rank-major),
so each record is read by exactly one (rank, worker); ``CaptionLoader`` keeps each
share's position and whose turn is next, so a resumed run sees exactly the batches
an uninterrupted one would. This module only adds the training-side choices: the
transform and category extractor from the config, a clear error when there are
too few records or shards for the readers, and an endless pass over epochs.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from synseg_core.data.captions import CaptionBatch, CaptionLoader, JsonlCaptions, ResizeToTensor, load_caption_dataset
from synseg_core.text.categories import CategoryExtractor


def build_loader(source: str, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], batch_size: int,
                 num_workers: int, seed: int, max_categories: int, category_backend: str, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False, stop_words: Sequence[str] | None = None,
                 extra_stop_words: Sequence[str] = ()) -> CaptionLoader:
    """A resumable loader of ``batch_size``-image batches for ``rank`` of ``world_size`` from a manifest or shards.

    ``stop_words`` replaces the category extractor's built-in stop-list (None keeps it), ``extra_stop_words`` extends it.
    """
    dataset = load_caption_dataset(
        source, transform=ResizeToTensor(image_size, mean, std),
        extractor=CategoryExtractor(max_categories, stop_words=stop_words, backend=category_backend,
                                    extra_stop_words=extra_stop_words),
        shuffle=True, seed=seed, rank=rank, world_size=world_size,
    )
    units, what = (len(dataset.offsets), "records") if isinstance(dataset, JsonlCaptions) else (len(dataset.shards), "shards")  # type: ignore[attr-defined]
    readers = world_size * max(1, num_workers)
    if units < readers:
        raise ValueError(f"{source}: {units} {what} cannot feed {world_size} rank(s) x {max(1, num_workers)} data worker(s); "
                         f"lower data.num_workers or provide at least {readers} {what}")
    return CaptionLoader(dataset, batch_size, num_workers, pin_memory=pin_memory)


def endless(loader: CaptionLoader) -> Iterator[CaptionBatch]:
    """Batches epoch after epoch (a training run counts steps, not epochs)."""
    while True:
        yield from loader
