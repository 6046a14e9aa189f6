"""Inference runtime: one ``Backend`` interface, shared pre/post-processing, and ``Segmenter``."""
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.processing import UNLABELED, Segmentation
from synseg_core.runtime.segmenter import Segmenter, list_backends

__all__ = ["UNLABELED", "Backend", "Segmentation", "Segmenter", "list_backends"]
