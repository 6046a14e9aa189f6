"""Score a segmentation dataset: predictions -> confusion matrix -> metrics, on one rank or many."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from synseg_core.data.segmentation import DatasetError, SegmentationDataset
from synseg_core.evaluation.distributed import Shard, reduce_confusion
from synseg_core.evaluation.inference import SlidingWindow
from synseg_core.evaluation.metrics import Scores, scores_from_confusion, update_confusion


@dataclass
class Example:
    """One image kept for the qualitative overlay grid."""

    name: str
    image: np.ndarray  # [H, W, 3] uint8
    truth: np.ndarray  # [H, W] int64 class ids, -1 = ignore
    prediction: np.ndarray  # [H, W] int64 class ids


@dataclass
class Evaluation:
    confusion: np.ndarray  # [C, C] int64, rows = ground truth, summed over every rank
    scores: Scores
    class_names: list[str]
    background_index: int | None
    num_images: int
    examples: list[Example] = field(default_factory=list)


def prompt_names(dataset: SegmentationDataset) -> list[str]:
    """The class names that get text prompts: all but the background class (a constant score instead)."""
    return [name for i, name in enumerate(dataset.class_names) if i != dataset.background_index]


def evaluate_dataset(
    inference: SlidingWindow,
    dataset: SegmentationDataset,
    shard: Shard | None = None,
    max_images: int | None = None,
    keep_examples: int = 0,
    progress: bool = True,
) -> Evaluation:
    """Predict every image of this rank's shard and return the metrics of the whole (reduced) dataset.

    Any unreadable or inconsistent image/mask raises (``DatasetError`` naming the
    file): skipping it would report a score for a different dataset than asked. So does a
    dataset without a single labelled pixel: every score of it would be made up.
    ``keep_examples`` images of rank 0 are kept for the overlay grid.
    """
    shard = shard or Shard()
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    text = inference.encode(prompt_names(dataset))
    classes = dataset.num_classes
    confusion = np.zeros((classes, classes), np.int64)
    examples: list[Example] = []
    indices = shard.indices(total)
    for index in tqdm(indices, desc=f"evaluate (rank {shard.rank})" if shard.world_size > 1 else "evaluate", disable=not progress, unit="img"):
        sample = dataset[index]
        prediction = inference.predict(sample.image, text, dataset.background_index)
        try:
            update_confusion(confusion, prediction, sample.mask)
        except ValueError as exc:
            raise ValueError(f"{dataset.files[index].mask}: {exc}") from exc
        if shard.is_main and len(examples) < keep_examples:
            examples.append(Example(sample.name, sample.image, sample.mask, prediction))
    confusion = reduce_confusion(confusion, shard)
    if not confusion.any():
        raise DatasetError(f"{dataset.source}: no labelled pixel in the {total} images scored (every mask pixel is the "
                           "ignore value): there is nothing to score")
    return Evaluation(
        confusion=confusion,
        scores=scores_from_confusion(confusion),
        class_names=list(dataset.class_names),
        background_index=dataset.background_index,
        num_images=total,
        examples=examples,
    )
