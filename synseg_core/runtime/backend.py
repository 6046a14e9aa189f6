"""The one interface every inference backend implements."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Backend(ABC):
    """Runs the network: normalised pixels + text embeddings -> activation-map logits.

    ``pixels`` [B, 3, H, W] float32, ``text`` [K, T] float32 (L2-normalised
    category embeddings) -> logits [B, K, H, W] float32. Pre/post-processing and
    text encoding live outside, so all backends share them.
    """

    name: str = "backend"
    precision: str = "fp32"
    #: fixed (H, W) the backend was built for, or None when any multiple of the patch size works
    input_size: tuple[int, int] | None = None

    @abstractmethod
    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        """[B, 3, H, W] + [K, T] -> logits [B, K, H, W]."""

    def close(self) -> None:  # noqa: B027 - optional: backends without resources need not override it
        """Release runtime resources (sessions, engines, GPU memory)."""
