"""Prompt-template sets and the text-embedding cache.

A category's embedding is the L2-normalised mean of the (normalised) text
embeddings of every template filled with the word. Encoding is the slow part of
a vocabulary change, so embeddings are cached per (model, template set, word):
a word that stays in the vocabulary is never encoded twice.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Template = Callable[[str], str]


def _fill(pattern: str) -> Template:
    return lambda word: pattern.format(word)


def _open_clip_templates(name: str) -> Callable[[], tuple[Template, ...]]:
    """open_clip's template list ``name``, imported on first use: this module is imported by the torch-free
    runtime and the ROS node, which never fill templates themselves (an export carries its patterns)."""

    def load() -> tuple[Template, ...]:
        import open_clip

        return tuple(getattr(open_clip, name))

    return load


# "verbatim": the text as given, no template (CLIPSeg's prompt form at inference).
# "tcl": TCL's evaluation set, the 7 "simple" ImageNet templates plus two plural forms.
_TEMPLATE_SOURCES: dict[str, Callable[[], tuple[Template, ...]]] = {
    "verbatim": lambda: (_fill("{}"),),
    "single": lambda: (_fill("a photo of a {}."),),
    "tcl": lambda: _open_clip_templates("SIMPLE_IMAGENET_TEMPLATES")() + (_fill("a photo of many {}."), _fill("a photo of {}s.")),
    "imagenet80": _open_clip_templates("OPENAI_IMAGENET_TEMPLATES"),
}
_LOADED: dict[str, tuple[Template, ...]] = {}


def list_template_sets() -> list[str]:
    return sorted(_TEMPLATE_SOURCES)


def get_templates(name: str) -> tuple[Template, ...]:
    if name not in _TEMPLATE_SOURCES:
        raise ValueError(f"unknown prompt template set {name!r}; choose one of {list_template_sets()}")
    if name not in _LOADED:
        _LOADED[name] = _TEMPLATE_SOURCES[name]()
    return _LOADED[name]


def fill_templates(word: str, template_set: str) -> list[str]:
    return [template(word) for template in get_templates(template_set)]


def check_vocabulary(words: Sequence[str], max_words: int | None = None) -> list[str]:
    """Validate a vocabulary: non-empty, stripped, unique words. Returns the stripped words."""
    if isinstance(words, str):
        raise ValueError(f"vocabulary must be a list of words, not one string (did you mean [{words!r}]?)")
    cleaned = [str(w).strip() for w in words]
    if not cleaned:
        raise ValueError("vocabulary is empty: give at least one word")
    if any(not w for w in cleaned):
        raise ValueError("vocabulary contains an empty word")
    seen: set[str] = set()
    duplicates = sorted({w for w in cleaned if w in seen or seen.add(w)})  # type: ignore[func-returns-value]
    if duplicates:
        raise ValueError(f"vocabulary repeats {duplicates}")
    if max_words is not None and len(cleaned) > max_words:
        raise ValueError(f"vocabulary has {len(cleaned)} words; at most {max_words} are allowed")
    return cleaned


def _stack(rows: list[Any]) -> Any:
    """Rows of torch tensors -> one tensor, rows of numpy arrays -> one array."""
    if isinstance(rows[0], np.ndarray):
        return np.stack(rows)
    import torch  # the rows are tensors, so torch is loaded already

    return torch.stack(rows)


class EmbeddingCache:
    """Thread-safe LRU cache of category embeddings keyed by (model id, template set, word).

    Rows are torch tensors (the torch text tower; kept on the CPU) or numpy arrays (the ONNX text tower).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._store: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def get_or_compute(
        self,
        model_id: str,
        template_set: str,
        words: Sequence[str],
        compute: Callable[[list[str]], Any],
    ) -> Any:
        """Embeddings [K, D] for ``words``; only the missing words are passed to ``compute``."""
        with self._lock:
            missing = [w for w in dict.fromkeys(words) if (model_id, template_set, w) not in self._store]
            self.hits += len(words) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = compute(missing)
            with self._lock:
                for word, emb in zip(missing, fresh, strict=True):
                    self._store[(model_id, template_set, word)] = np.array(emb) if isinstance(emb, np.ndarray) else emb.detach().cpu()
                while len(self._store) > self.max_entries:
                    self._store.popitem(last=False)
        with self._lock:
            rows = []
            for w in words:
                key = (model_id, template_set, w)
                self._store.move_to_end(key)
                rows.append(self._store[key])
        return _stack(rows)

    def clear(self) -> None:
        with self._lock:
            self._store.clear()
