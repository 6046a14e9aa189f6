"""The slow host-side reference of post-processing (numpy + OpenCV), for parity tests and fake backends only.

What every backend's ``predict`` must reproduce: each logit map bilinearly resized to the output size
(cv2.INTER_LINEAR), S_c = sigmoid, labels = argmax over K, confidence = max over K.
"""
from __future__ import annotations

import numpy as np

from synseg_core.runtime.backend import Backend, Prediction
from synseg_core.runtime.processing import resize_maps, sigmoid


def reference_postprocess(logits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """logits [K, h, w] -> (labels [H, W] int32, confidence [H, W], class maps [K, H, W])."""
    maps = sigmoid(resize_maps(np.asarray(logits, np.float32), size))
    return maps.argmax(axis=0).astype(np.int32), maps.max(axis=0), maps


class ReferenceBackend(Backend):
    """A fake backend's ``predict``: its own ``infer`` logits through the host reference."""

    def predict(self, pixels, text, size, class_maps=False):
        results = [reference_postprocess(logits, size) for logits in self.infer(pixels, text)]
        return Prediction(
            labels=np.stack([r[0] for r in results]),
            confidence=np.stack([r[1] for r in results]),
            class_maps=np.stack([r[2] for r in results]) if class_maps else None,
        )
