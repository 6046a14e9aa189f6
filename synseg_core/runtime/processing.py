"""Host-side processing shared by every backend (numpy + OpenCV, no torch).

``preprocess`` runs before every backend, so they can only differ in the network itself. Post-processing
(upsampling, argmax, best score) runs on each backend's own device (``Backend.predict``); the host only
applies the threshold to [H, W]. ``resize_maps`` and ``sigmoid`` serve evaluation, which averages
per-class scores of sliding windows before the argmax.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

UNLABELED = -1
_CV2_MAX_CHANNELS = 128  # cv2.resize's channel limit (CV_CN_MAX in OpenCV 5)


@dataclass(frozen=True)
class Segmentation:
    """One image's result, at the input image's resolution."""

    labels: np.ndarray  # [H, W] int32: index into ``vocabulary``; UNLABELED (-1) where the best score < threshold
    confidence: np.ndarray  # [H, W] float32 in [0, 1]: the best class score S_c
    vocabulary: tuple[str, ...]
    class_maps: np.ndarray | None = None  # [K, H, W] float32 in [0, 1]: S_c = sigmoid(A_c) per word, when asked for


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB image [H, W, 3] uint8 (a [H, W] grey image is expanded); clear errors otherwise."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0-255), got {image.dtype}; convert it first")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


def preprocess(
    image: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], antialias: bool = False
) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> normalised float32 [1, 3, h, w] at ``size`` = (h, w).

    ``antialias``: PIL's bilinear filter, which widens when shrinking (what CLIPSeg's Hugging Face processor
    does), instead of OpenCV's plain bilinear interpolation.
    """
    image = check_image(image)
    height, width = size
    if image.shape[:2] == (height, width):
        resized = image
    elif antialias:
        from PIL import Image

        resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    else:
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    pixels = resized.astype(np.float32) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [K, h, w] float maps to [K, H, W] (in chunks: cv2.resize takes <= 128 channels)."""
    height, width = size
    if maps.shape[1:] == (height, width):
        return maps.astype(np.float32, copy=False)
    chunks = []
    for start in range(0, maps.shape[0], _CV2_MAX_CHANNELS):
        chunk = np.ascontiguousarray(maps[start : start + _CV2_MAX_CHANNELS].transpose(1, 2, 0), dtype=np.float32)
        out = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_LINEAR)
        chunks.append(out.reshape(height, width, -1).transpose(2, 0, 1))
    return np.concatenate(chunks, axis=0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)


def apply_threshold(labels: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
    """Argmax labels [H, W] -> int32 labels with UNLABELED where the best score is below ``threshold``."""
    labels = labels.astype(np.int32, copy=True)
    labels[confidence < threshold] = UNLABELED
    return labels
