"""Colours, overlays and legends: a word always gets the same colour, in every tool and every run."""
from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence

import cv2
import numpy as np

from synseg_core.runtime.processing import UNLABELED


def colour_for(word: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour derived from the word itself (not from its position in a list)."""
    digest = hashlib.sha1(word.strip().lower().encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    saturation = 0.65 + 0.35 * digest[2] / 255.0
    value = 0.75 + 0.25 * digest[3] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def palette(vocabulary: Sequence[str]) -> np.ndarray:
    """[K, 3] uint8 colours for a vocabulary."""
    return np.array([colour_for(w) for w in vocabulary], dtype=np.uint8).reshape(-1, 3)


def colourise(labels: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """labels [H, W] (index into vocabulary, UNLABELED = -1) -> RGB [H, W, 3]; unlabeled is black."""
    table = np.concatenate([palette(vocabulary), np.zeros((1, 3), np.uint8)])
    return table[np.where(labels == UNLABELED, len(vocabulary), labels)]


def overlay(image: np.ndarray, labels: np.ndarray, vocabulary: Sequence[str], alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB uint8 image; unlabeled pixels keep the image."""
    blended = cv2.addWeighted(image, 1.0 - alpha, colourise(labels, vocabulary), alpha, 0.0)
    return np.where((labels != UNLABELED)[..., None], blended, image)


def add_legend(image: np.ndarray, vocabulary: Sequence[str], present: Sequence[int] | None = None) -> np.ndarray:
    """Append a legend panel (colour swatch + word per row) to the right of an RGB image."""
    indices = list(range(len(vocabulary))) if present is None else list(present)
    row, pad = 18, 6
    text_width = max([cv2.getTextSize(vocabulary[i], cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0] for i in indices] + [60])
    width = pad * 3 + 14 + text_width
    height = max(image.shape[0], pad * 2 + row * max(len(indices), 1))
    panel = np.full((height, width, 3), 255, np.uint8)
    for n, index in enumerate(indices):
        y = pad + n * row
        cv2.rectangle(panel, (pad, y), (pad + 14, y + 14), tuple(int(c) for c in colour_for(vocabulary[index])), -1)
        cv2.putText(panel, vocabulary[index], (pad * 2 + 14, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((height, image.shape[1] + width, 3), 255, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    canvas[:, image.shape[1] :] = panel
    return canvas


def label_image(labels: np.ndarray, num_words: int) -> np.ndarray:
    """Label ids for a PNG/ROS image: uint8 with 255 = unlabeled for <= 254 words, else uint16 with 65535."""
    if num_words <= 254:
        return np.where(labels == UNLABELED, 255, labels).astype(np.uint8)
    return np.where(labels == UNLABELED, 65535, labels).astype(np.uint16)
