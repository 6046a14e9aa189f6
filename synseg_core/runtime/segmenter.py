"""``Segmenter``: image(s) + vocabulary -> label ids and confidence (per-class maps on request), on any backend."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synseg_core.config import SynSegConfig
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.factory import SegmenterParts, TextEmbedder, list_backends, parts_from_checkpoint, parts_from_export
from synseg_core.runtime.processing import Segmentation, apply_threshold, check_image, preprocess
from synseg_core.text.prompts import check_vocabulary

__all__ = ["MAX_VOCABULARY", "Segmenter", "list_backends"]

MAX_VOCABULARY = 1024


class Segmenter:
    """Open-vocabulary segmentation with one pre-processing path and device-side post-processing for every backend.

    >>> seg = Segmenter.from_checkpoint("demo", backend="onnxruntime")
    >>> out = seg.segment(rgb_image, ["door", "chair"])
    >>> out.labels  # [H, W] int32, index into out.vocabulary, -1 = unlabeled
    """

    def __init__(
        self,
        backend: Backend,
        embed_text: TextEmbedder,
        config: SynSegConfig,
        input_size: tuple[int, int] | int | None = None,
        threshold: float | None = None,
        template_set: str | None = None,
        patch_size: int = 16,
    ) -> None:
        self.backend = backend
        self.embed_text = embed_text
        self.config = config
        self.patch_size = patch_size
        size = input_size or backend.input_size or config.image_size
        self.input_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if any(s <= 0 or s % patch_size for s in self.input_size):
            raise ValueError(f"input_size {self.input_size} must be positive multiples of the patch size {patch_size}")
        if backend.input_size is not None and tuple(backend.input_size) != self.input_size:
            raise ValueError(f"the {backend.name} backend was built for input size {backend.input_size}, not {self.input_size}")
        self.threshold = config.threshold if threshold is None else float(threshold)
        self.template_set = template_set or config.prompt_set
        self.timings: dict[str, float] = {}

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def precision(self) -> str:
        return self.backend.precision

    @classmethod
    def _from_parts(cls, parts: SegmenterParts, **kwargs: Any) -> Segmenter:
        return cls(parts.backend, parts.embed_text, parts.config, patch_size=parts.patch_size, **kwargs)

    @classmethod
    def from_model(
        cls, model: Any, device: str = "cpu", precision: str = "fp32", backend_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Segmenter:
        """A model (SynSeg, or any module with ``.config``, ``.patch_size`` and a text tower) on the torch backend.

        ``backend_options`` go to ``TorchBackend`` (cuda_graphs, compile, ...); ``kwargs`` to ``Segmenter``.
        """
        from synseg_core.runtime.torch_backend import TorchBackend, torch_text_embedder  # torch only on this path

        backend = TorchBackend(model, device=device, precision=precision, **(backend_options or {}))
        return cls(backend, torch_text_embedder(model), model.config, patch_size=model.patch_size, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int] | int | None = None,
        threshold: float | None = None,
        template_set: str | None = None,
        **backend_options: Any,
    ) -> Segmenter:
        """Load a checkpoint directory and run it on ``backend`` (torch, onnxruntime or tensorrt).

        ``backend_options``: see ``factory.parts_from_checkpoint`` (onnx_dir, export_if_missing, ...) and the
        backend's constructor (torch: cuda_graphs, compile; onnxruntime: threads, max_classes; tensorrt: ...).
        """
        parts = parts_from_checkpoint(path, backend, device=device, precision=precision, input_size=input_size, **backend_options)
        return cls._from_parts(parts, input_size=input_size, threshold=threshold, template_set=template_set)

    @classmethod
    def from_export(
        cls,
        directory: str | Path,
        backend: str = "onnxruntime",
        threshold: float | None = None,
        template_set: str | None = None,
        text_device: str = "cpu",
        **backend_options: Any,
    ) -> Segmenter:
        """An export folder alone (made with ``--text-encoder``), no checkpoint and no torch needed.

        ``backend`` is 'onnxruntime' or 'tensorrt'; ``backend_options`` go to its constructor.
        """
        parts = parts_from_export(directory, backend, text_device=text_device, **backend_options)
        return cls._from_parts(parts, threshold=threshold, template_set=template_set)

    def encode_vocabulary(self, vocabulary: Sequence[str], template_set: str | None = None) -> np.ndarray:
        """Validated, cached text embeddings [K, T] (repeated words are never re-encoded)."""
        words = check_vocabulary(vocabulary, MAX_VOCABULARY)
        return self.embed_text(words, template_set or self.template_set)

    def segment(
        self,
        image: np.ndarray,
        vocabulary: Sequence[str],
        threshold: float | None = None,
        template_set: str | None = None,
        class_maps: bool = False,
    ) -> Segmentation:
        """RGB uint8 [H, W, 3] + words -> Segmentation at the image's resolution (``class_maps`` on request).

        ``timings``: text, preprocess, infer (network + post-processing on the backend's device, including the
        copy of labels and confidence to the host), postprocess (the threshold, on the host).
        """
        start = time.perf_counter()
        words = check_vocabulary(vocabulary, MAX_VOCABULARY)
        text = self.encode_vocabulary(words, template_set)
        image = check_image(image)
        t_text = time.perf_counter()
        pixels = preprocess(image, self.input_size, self.config.mean, self.config.std, self.config.resize_antialias)
        t_pre = time.perf_counter()
        prediction = self.backend.predict(pixels, text, image.shape[:2], class_maps=class_maps)
        t_infer = time.perf_counter()
        confidence = prediction.confidence[0]
        labels = apply_threshold(prediction.labels[0], confidence, self.threshold if threshold is None else threshold)
        maps = prediction.class_maps[0] if prediction.class_maps is not None else None
        result = Segmentation(labels=labels, confidence=confidence, vocabulary=tuple(words), class_maps=maps)
        t_post = time.perf_counter()
        self.timings = {"text": t_text - start, "preprocess": t_pre - t_text, "infer": t_infer - t_pre, "postprocess": t_post - t_infer}
        return result
