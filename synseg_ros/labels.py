"""The vocabulary as label ids: validation, stable ids across changes, and the label image encoding.

ROS-free. Ids follow the vision_msgs convention: label images are `mono8` with 255 = unlabeled for up
to 254 classes (ids 0..253), otherwise `16UC1` with 65535 = unlabeled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from synseg_core.runtime.segmenter import MAX_VOCABULARY
from synseg_core.text.prompts import check_vocabulary
from synseg_core.visualize import colour_for

MONO8_UNLABELED = 255
MONO8_CLASSES = 254
MONO16_UNLABELED = 65535
MAX_IDS = MONO16_UNLABELED  # ids 0..65534; the last value means unlabeled
# A word or short phrase; longer text would be cut off by CLIP's 77-token context anyway.
MAX_WORD_CHARS = 100


def parse_vocabulary(words: object, max_words: int = MAX_VOCABULARY) -> tuple[str, ...]:
    """Check a vocabulary given as a ROS value and return its stripped words.

    Raises ValueError with the reason: not a list of strings (rclpy turns `[]` into a bool or byte
    array), a word longer than MAX_WORD_CHARS, or anything the library rejects (empty, blank or
    repeated words, too many words).
    """
    if words is None:  # `vocabulary: []` in a params file leaves a dynamically typed parameter NOT_SET
        words = []
    if isinstance(words, (str, bytes)) or not isinstance(words, Iterable):
        raise ValueError(
            f"vocabulary must be a list of words such as [door, chair], got {type(words).__name__}"
        )
    words = list(words)
    wrong = [word for word in words if not isinstance(word, str)]
    if words and wrong:
        raise ValueError(f"vocabulary words must be strings, got {wrong[0]!r}")
    for word in words:
        if len(word.strip()) > MAX_WORD_CHARS:
            raise ValueError(
                f"vocabulary word {word.strip()[:30]!r}... has {len(word.strip())} characters, at most "
                f"{MAX_WORD_CHARS} are allowed: give a word or a short phrase"
            )
    return tuple(check_vocabulary(words, max_words))


@dataclass(frozen=True)
class LabelMap:
    """Words with the id each has in label images.

    `words` is the order given to the model, so a model index i means id `ids[i]`; it is kept sorted
    by id. A word that stays across `with_words` keeps its id; new words take the lowest free ids.
    `version` counts changes of the id -> word map, so consumers can tell which map a mask was made
    with.
    """

    words: tuple[str, ...]
    ids: tuple[int, ...]
    version: int = 1

    @classmethod
    def create(cls, words: Sequence[str]) -> LabelMap:
        return cls(tuple(words), tuple(range(len(words))))

    def with_words(self, words: Sequence[str]) -> LabelMap:
        """The map for a new vocabulary; `self` when it maps the same ids to the same words."""
        kept = dict(zip(self.words, self.ids, strict=True))
        taken = {kept[word] for word in words if word in kept}
        free = (i for i in range(MAX_IDS) if i not in taken)
        ids = [kept[word] if word in kept else next(free) for word in words]
        mapping = dict(zip(words, ids, strict=True))
        if mapping == kept:
            return self
        by_id = sorted(mapping.items(), key=lambda item: item[1])
        return LabelMap(tuple(w for w, _ in by_id), tuple(i for _, i in by_id), self.version + 1)

    @property
    def unlabeled(self) -> int:
        return MONO8_UNLABELED if max(self.ids) < MONO8_CLASSES else MONO16_UNLABELED

    @property
    def encoding(self) -> str:
        return "mono8" if self.unlabeled == MONO8_UNLABELED else "16UC1"

    @cached_property
    def _lookup(self) -> np.ndarray:
        # Model labels are indices with -1 for unlabeled; index -1 picks the last entry.
        dtype = np.uint8 if self.unlabeled == MONO8_UNLABELED else np.uint16
        return np.array([*self.ids, self.unlabeled], dtype=dtype)

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Model labels [H, W] (indices into `words`, -1 = unlabeled) -> label image [H, W] of ids."""
        if self.ids == tuple(range(len(self.ids))):
            # Index = id: the unsigned cast alone turns -1 into 255 / 65535, 20x faster than a lookup.
            return labels.astype(self._lookup.dtype)
        return self._lookup[labels]

    def classes(self) -> list[tuple[int, str, tuple[int, int, int]]]:
        """(id, word, RGB colour) for every word, by id."""
        return sorted((i, word, colour_for(word)) for i, word in zip(self.ids, self.words, strict=True))
