"""The one interface every inference backend implements, and the input checks they share (numpy only)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """A batch's post-processed result at the requested output size, computed where the network ran.

    Only these arrays cross from the device to the host: 8 bytes per pixel instead of 4 * K.
    """

    labels: np.ndarray  # [B, H, W] int32: argmax over the K words (no threshold applied)
    confidence: np.ndarray  # [B, H, W] float32: sigmoid of the best logit = the best class score S_c
    class_maps: np.ndarray | None = None  # [B, K, H, W] float32 sigmoid scores, only when asked for


class Backend(ABC):
    """Runs the network on normalised pixels [B, 3, H, W] float32 and text embeddings [K, T] float32.

    ``predict`` is the deployment path: logits are upsampled to ``size``, and argmax, the best score and
    (optionally) the per-class scores are computed on the backend's own device (torch ops, an ONNX graph,
    a TensorRT engine). ``infer`` returns the raw logits at the network's input resolution, for evaluation's
    sliding windows, which average scores across windows before any argmax.
    """

    name: str = "backend"
    precision: str = "fp32"
    #: fixed (H, W) the backend was built for, or None when any multiple of the patch size works
    input_size: tuple[int, int] | None = None

    @abstractmethod
    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        """[B, 3, H, W] + [K, T] -> logits [B, K, H, W] at the input resolution."""

    @abstractmethod
    def predict(self, pixels: np.ndarray, text: np.ndarray, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        """[B, 3, H, W] + [K, T] -> labels, confidence (and class maps) at ``size`` = (H_out, W_out)."""

    def close(self) -> None:  # noqa: B027 - optional: backends without resources need not override it
        """Release runtime resources (sessions, engines, GPU memory)."""


def check_inputs(pixels: np.ndarray, text: np.ndarray, input_size: tuple[int, int], text_dim: int) -> None:
    """Clear errors for network inputs a runtime would crash on or silently misread."""
    if not isinstance(pixels, np.ndarray) or not isinstance(text, np.ndarray):
        raise TypeError("pixels and text must be numpy arrays")
    if pixels.dtype != np.float32:
        raise ValueError(
            f"pixels must be normalised float32 [B, 3, H, W], got {pixels.dtype}; "
            "use synseg_core.runtime.processing.preprocess on uint8 RGB images"
        )
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[0] < 1:
        raise ValueError(f"pixels must be [B, 3, H, W] with B >= 1, got shape {pixels.shape}")
    if tuple(pixels.shape[2:]) != tuple(input_size):
        raise ValueError(
            f"pixels are {pixels.shape[2]}x{pixels.shape[3]} but this model was built for "
            f"{input_size[0]}x{input_size[1]}; resize (preprocess does) or re-export for that size"
        )
    if text.dtype != np.float32:
        raise ValueError(f"text embeddings must be float32 [K, {text_dim}], got {text.dtype}")
    if text.ndim != 2 or text.shape[1] != text_dim:
        raise ValueError(f"text embeddings must be [K, {text_dim}], got shape {text.shape}")
    if text.shape[0] == 0:
        raise ValueError("the vocabulary is empty: give at least one word")
    if not np.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or inf")
    if not np.isfinite(text).all():
        raise ValueError("text embeddings contain NaN or inf")


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """An output size (H, W) of positive ints."""
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"output size must be positive (H, W), got {tuple(size)}")
    return height, width


def check_logits(logits: np.ndarray, backend: str) -> np.ndarray:
    if not np.isfinite(logits).all():
        raise FloatingPointError(f"the {backend} backend produced NaN/inf logits; refusing to return a wrong mask")
    return logits


def check_prediction(prediction: Prediction, backend: str) -> Prediction:
    """A NaN anywhere in a pixel's logits makes its best score NaN (checked on [B, H, W], which is cheap)."""
    if not np.isfinite(prediction.confidence).all():
        raise FloatingPointError(f"the {backend} backend produced NaN/inf activation maps; refusing to return a wrong mask")
    return prediction


def run_chunked(
    pixels: np.ndarray,
    text: np.ndarray,
    max_batch: int,
    max_classes: int,
    encode: Callable[[np.ndarray], Any],
    decode: Callable[[Any, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Encode ``pixels`` in batches of ``max_batch``, decode each against ``text`` in chunks of ``max_classes``.

    Classes are independent in the decoder (one sequence per image and class), so chunking the vocabulary
    bounds memory without changing a single logit. Returns the chunks concatenated along K and B.
    """
    rows = []
    for start in range(0, pixels.shape[0], max_batch):
        features = encode(pixels[start : start + max_batch])
        parts = [decode(features, text[k : k + max_classes]) for k in range(0, text.shape[0], max_classes)]
        rows.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
    return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)


def predict_chunked(
    pixels: np.ndarray,
    text: np.ndarray,
    max_batch: int,
    max_classes: int,
    class_maps: bool,
    encode: Callable[[np.ndarray], Any],
    decode: Callable[[Any, np.ndarray, bool], Prediction],
) -> Prediction:
    """``run_chunked`` for predictions: per-chunk (labels, confidence) merge on the host, on [B, H, W] only.

    A later chunk wins a pixel only with a strictly higher score, so ties go to the lower class index,
    exactly as one argmax over all K would.
    """
    rows = []
    for start in range(0, pixels.shape[0], max_batch):
        features = encode(pixels[start : start + max_batch])
        best: Prediction | None = None
        maps = []
        for offset in range(0, text.shape[0], max_classes):
            part = decode(features, text[offset : offset + max_classes], class_maps)
            if part.class_maps is not None:
                maps.append(part.class_maps)
            if best is None:
                best = part
                continue
            better = part.confidence > best.confidence
            best = Prediction(
                labels=np.where(better, part.labels + np.int32(offset), best.labels).astype(np.int32, copy=False),
                confidence=np.where(better, part.confidence, best.confidence),
            )
        assert best is not None  # text has >= 1 row (check_inputs)
        rows.append(Prediction(best.labels, best.confidence, np.concatenate(maps, axis=1) if maps else None))
    if len(rows) == 1:
        return rows[0]
    return Prediction(
        labels=np.concatenate([r.labels for r in rows]),
        confidence=np.concatenate([r.confidence for r in rows]),
        class_maps=np.concatenate([r.class_maps for r in rows]) if class_maps else None,
    )
