"""Inference runtime: one ``Backend`` interface, shared pre-processing, device-side post-processing, ``Segmenter``.

Layers (imports point down): ``segmenter`` -> ``factory`` -> the backends (``torch_backend``, ``onnx_backend``,
``tensorrt_backend``, imported by name when used) -> ``backend`` (the interface), ``export_format`` (what an
export folder holds), ``processing`` (host-side pre-processing and the threshold).
"""
from synseg_core.runtime.backend import Backend, Prediction
from synseg_core.runtime.processing import UNLABELED, Segmentation
from synseg_core.runtime.segmenter import Segmenter, list_backends

__all__ = ["UNLABELED", "Backend", "Prediction", "Segmentation", "Segmenter", "list_backends"]
