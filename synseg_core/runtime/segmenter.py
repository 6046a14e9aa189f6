"""``Segmenter``: image(s) + vocabulary -> label ids, confidence and per-class maps, on any backend."""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from synseg_core.checkpoint import load_model, resolve_checkpoint
from synseg_core.config import SynSegConfig
from synseg_core.model.synseg import SynSeg
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.processing import Segmentation, check_image, postprocess, preprocess
from synseg_core.text.prompts import check_vocabulary

#: backend name -> module with ``from_checkpoint(directory, model=..., **options) -> Backend`` (imported lazily)
BACKEND_MODULES = {
    "torch": "synseg_core.runtime.torch_backend",
    "onnxruntime": "synseg_core.runtime.onnx_backend",
    "tensorrt": "synseg_core.runtime.tensorrt_backend",
}

TextEmbedder = Callable[[Sequence[str], str], np.ndarray]  # (words, template set) -> [K, T] float32
MAX_VOCABULARY = 1024


def list_backends() -> list[str]:
    return list(BACKEND_MODULES)


def torch_text_embedder(model: SynSeg) -> TextEmbedder:
    """The model's frozen text tower behind the shared embedding cache."""

    def embed(words: Sequence[str], template_set: str) -> np.ndarray:
        return model.text_encoder.encode(list(words), template_set).float().cpu().numpy()

    return embed


class Segmenter:
    """Open-vocabulary segmentation with one shared pre/post-processing path for every backend.

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
    def from_model(cls, model: SynSeg, device: str = "cpu", precision: str = "fp32", **kwargs: object) -> Segmenter:
        from synseg_core.runtime.torch_backend import TorchBackend

        backend = TorchBackend(model, device=device, precision=precision)
        return cls(backend, torch_text_embedder(model), model.config, patch_size=model.patch_size, **kwargs)  # type: ignore[arg-type]

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
        **backend_options: object,
    ) -> Segmenter:
        """Load a checkpoint directory and run it on ``backend`` (torch, onnxruntime or tensorrt)."""
        if backend not in BACKEND_MODULES:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list_backends()}")
        directory = resolve_checkpoint(path)
        model = load_model(directory)
        module = importlib.import_module(BACKEND_MODULES[backend])
        runner: Backend = module.from_checkpoint(
            directory, model=model, device=device, precision=precision, input_size=input_size, **backend_options
        )
        return cls(
            runner, torch_text_embedder(model), model.config, input_size=input_size, threshold=threshold,
            template_set=template_set, patch_size=model.patch_size,
        )

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
    ) -> Segmentation:
        """RGB uint8 [H, W, 3] + words -> Segmentation at the image's resolution."""
        start = time.perf_counter()
        words = check_vocabulary(vocabulary, MAX_VOCABULARY)
        text = self.encode_vocabulary(words, template_set)
        image = check_image(image)
        t_text = time.perf_counter()
        pixels = preprocess(image, self.input_size, self.config.mean, self.config.std, self.config.resize_antialias)
        t_pre = time.perf_counter()
        logits = self.backend.infer(pixels, text)
        t_infer = time.perf_counter()
        result = postprocess(logits[0], image.shape[:2], words, self.threshold if threshold is None else threshold)
        t_post = time.perf_counter()
        self.timings = {"text": t_text - start, "preprocess": t_pre - t_text, "infer": t_infer - t_pre, "postprocess": t_post - t_infer}
        return result

