"""Dense prediction for evaluation: short-side resize, sliding windows over ``Backend.infer``, score averaging.

It runs on a ``Segmenter``'s backend, text embedder and normalisation, so the
torch, ONNX Runtime and TensorRT backends are scored by the same code. Per
window, logits become scores S_c = sigmoid(A_c) and are optionally refined
(PAMR); overlapping windows are averaged in score space and resized to the
image, as in TCL's mmseg ``slide`` inference. Datasets with a background class
get a constant background score map before the argmax.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from synseg_core.evaluation.protocols import Protocol
from synseg_core.runtime.processing import preprocess, resize_maps, sigmoid
from synseg_core.runtime.segmenter import Segmenter

#: (pixels [B, 3, h, w] normalised, scores [B, K, h, w] in [0, 1]) -> refined scores [B, K, h, w]
Refiner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pamr_refiner(device: str = "cpu") -> Refiner:
    """PAMR with TCL's settings (10 iterations, dilations 1, 2, 4, 8, 12, 24) on numpy windows."""
    from synseg_core.pamr import pamr

    @torch.inference_mode()
    def refine(pixels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        refined = pamr(torch.from_numpy(pixels).to(device), torch.from_numpy(scores).to(device))
        return refined.float().cpu().numpy()

    return refine


def resized_shape(height: int, width: int, short_side: int | None, max_long_side: int | None) -> tuple[int, int]:
    """Keep-ratio size with the short side at ``short_side`` and the long side at most ``max_long_side`` (mmseg rule)."""
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    if max_long_side is not None:
        scale = min(scale, max_long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``min(crop, length)`` covering 0..length; the last one is flush with the end."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


class SlidingWindow:
    """Class-score maps and label maps of whole images under an evaluation ``Protocol``."""

    def __init__(self, segmenter: Segmenter, protocol: Protocol, refine: Refiner | None = None, batch_size: int = 8) -> None:
        if protocol.pamr and refine is None:
            raise ValueError(f"protocol {protocol.name!r} asks for PAMR but no refiner was given")
        self.segmenter = segmenter
        self.protocol = protocol
        self.refine = refine if protocol.pamr else None
        self.batch_size = batch_size

    def encode(self, words: Sequence[str]) -> np.ndarray:
        """Class-name embeddings [K, T] with the protocol's template set."""
        return self.segmenter.encode_vocabulary(words, self.protocol.template_set)

    def network_size(self, window: tuple[int, int]) -> tuple[int, int]:
        """The backend input a window is padded to: the backend's fixed size, else the next patch multiple."""
        fixed = self.segmenter.backend.input_size
        if fixed is not None:
            if window[0] > fixed[0] or window[1] > fixed[1]:
                raise ValueError(
                    f"the {self.segmenter.backend.name} backend takes {fixed[0]}x{fixed[1]} inputs but the protocol's windows are "
                    f"{window[0]}x{window[1]}: export the model for the window size or pass a smaller --crop"
                )
            return int(fixed[0]), int(fixed[1])
        patch = self.segmenter.patch_size
        return -(-window[0] // patch) * patch, -(-window[1] // patch) * patch

    def class_scores(self, image: np.ndarray, text: np.ndarray) -> np.ndarray:
        """RGB uint8 [H, W, 3] + text [K, T] -> averaged scores [K, H, W] in [0, 1]."""
        height, width = image.shape[:2]
        protocol = self.protocol
        size = resized_shape(height, width, protocol.short_side, protocol.max_long_side)
        config = self.segmenter.config
        pixels = preprocess(image, size, config.mean, config.std)[0]  # [3, h, w]
        window = (min(protocol.crop, size[0]), min(protocol.crop, size[1]))
        net_h, net_w = self.network_size(window)
        boxes = [(y, x) for y in window_starts(size[0], protocol.crop, protocol.stride) for x in window_starts(size[1], protocol.crop, protocol.stride)]
        total = np.zeros((text.shape[0], *size), np.float32)
        count = np.zeros(size, np.float32)
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            # Zero padding in normalised space is the dataset-mean colour, as mmseg pads after normalising.
            crops = np.zeros((len(chunk), 3, net_h, net_w), np.float32)
            for i, (y, x) in enumerate(chunk):
                crops[i, :, : window[0], : window[1]] = pixels[:, y : y + window[0], x : x + window[1]]
            logits = self.segmenter.backend.infer(crops, text)
            if not np.isfinite(logits).all():
                raise FloatingPointError(f"the {self.segmenter.backend.name} backend produced NaN/inf activation maps")
            scores = sigmoid(logits)
            if self.refine is not None:
                scores = self.refine(crops, scores)
            for i, (y, x) in enumerate(chunk):
                total[:, y : y + window[0], x : x + window[1]] += scores[i, :, : window[0], : window[1]]
                count[y : y + window[0], x : x + window[1]] += 1.0
        return resize_maps(total / count, (height, width))

    def predict(self, image: np.ndarray, text: np.ndarray, background_index: int | None = None) -> np.ndarray:
        """Label map [H, W] int64 of dataset class ids.

        ``text`` holds the K non-background classes in id order. With a
        ``background_index``, a constant map at the protocol's background score is
        inserted at that position before the argmax, so argmax indices are class ids.
        """
        scores = self.class_scores(image, text)
        if background_index is not None:
            constant = np.full(scores.shape[1:], self.protocol.background_threshold, np.float32)
            scores = np.insert(scores, background_index, constant, axis=0)
        return scores.argmax(axis=0).astype(np.int64)
