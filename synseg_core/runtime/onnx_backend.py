"""ONNX Runtime backend: runs an export folder's graphs (format in ``export_format``) on CPU or CUDA.

Activations and logits stay on the execution device (IO binding); ``predict`` runs ``postprocess.onnx`` there
too, so only labels and confidence [B, H, W] are copied to the host. onnxruntime is imported lazily, so this
module imports without it (and without torch).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from synseg_core.runtime.backend import (
    Backend,
    Prediction,
    check_inputs,
    check_logits,
    check_prediction,
    check_size,
    predict_chunked,
    run_chunked,
)
from synseg_core.runtime.export_format import (
    CLASS_MAPS,
    CONFIDENCE,
    DECODER,
    FILE_NAMES,
    IMAGE_ENCODER,
    LABELS,
    LOGITS,
    MAP_CLASSES,
    PIXELS,
    POSTPROCESS,
    SIZE,
    TEXT,
    ExportError,
    read_export,
)

log = logging.getLogger("synseg.runtime.onnx")


def _import_onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'synseg[onnx]' (or onnxruntime-gpu)") from exc
    return onnxruntime


def select_providers(device: str, providers: list[Any] | None) -> tuple[list[Any], str, int]:
    """Execution providers for ``device`` ('cpu', 'cuda', 'cuda:1') -> (providers, I/O device type, device id)."""
    ort = _import_onnxruntime()
    available = ort.get_available_providers()
    kind, _, index = device.partition(":")
    device_id = int(index or 0)
    if providers is not None:
        missing = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in missing if p not in available]
        if missing:
            raise ValueError(f"execution providers {missing} are not available in this onnxruntime (available: {available})")
        return providers, ("cuda" if kind == "cuda" else "cpu"), device_id
    if kind == "cpu":
        return ["CPUExecutionProvider"], "cpu", 0
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"device {device!r} needs onnxruntime-gpu (CUDAExecutionProvider); available: {available}")
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"], "cuda", device_id
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda[:N]'")


def create_session(path: Path, providers: list[Any], threads: int | None = None, optimize: bool = True):  # type: ignore[no-untyped-def]
    """An InferenceSession; a corrupt file becomes an ExportError that names it."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    # A backend's sessions run one after another (encoder, decoder, post-processing): a thread pool spinning
    # after its run would take the cores the next session needs (measured 2-3x slower frames on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph/... errors
        raise ExportError(f"{path}: onnxruntime cannot load it ({exc}); re-export the model") from exc


class OnnxBackend(Backend):
    """Runs ``image_encoder.onnx``, ``decoder.onnx`` and (for ``predict``) ``postprocess.onnx``.

    ``max_classes`` (default: the export's) is how many words one decoder call takes; longer vocabularies are
    decoded in chunks. Lower it to bound memory: the decoder's working set grows linearly with it (about
    8 GB for 100 words at 640x480 with the ViT-B/16 preset).

    ``device`` 'cpu' or 'cuda[:N]' picks execution providers (``providers`` overrides them, e.g. to add
    'TensorrtExecutionProvider'). FP16 exports are meant for CUDA/TensorRT; on the CPU they run with graph
    optimisation off, because onnxruntime's CPU optimiser crashes on FP16 CLIP graphs and CPUs gain nothing.
    """

    name = "onnxruntime"

    def __init__(
        self,
        directory: str | Path,
        device: str = "cpu",
        providers: list[Any] | None = None,
        threads: int | None = None,
        max_classes: int | None = None,
        verify: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.meta = read_export(self.directory, verify=verify)
        self.precision = self.meta.precision
        self.input_size = self.meta.input_size
        self.max_classes = max_classes or self.meta.max_classes
        chosen, self._io_device, self._device_id = select_providers(device, providers)
        optimize = not (self.precision == "fp16" and self._io_device == "cpu")
        if not optimize:
            log.warning("%s: FP16 on the CPU runs unoptimised (for checking FP16 numerics, not for speed)", self.directory)
        self._image = create_session(self.directory / FILE_NAMES[IMAGE_ENCODER], chosen, threads, optimize)
        self._decoder = create_session(self.directory / FILE_NAMES[DECODER], chosen, threads, optimize)
        self._post = create_session(self.directory / FILE_NAMES[POSTPROCESS], chosen, threads)
        self.providers = self._image.get_providers()

    def encode_image(self, pixels: np.ndarray) -> list[Any]:
        """pixels [B, 3, H, W] -> activations (onnxruntime OrtValues on the execution device)."""
        binding = self._image.io_binding()
        binding.bind_cpu_input(PIXELS, np.ascontiguousarray(pixels))
        for name in self.meta.activation_names:
            binding.bind_output(name, self._io_device, self._device_id)
        self._image.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def _decode_on_device(self, activations: list[Any], text: np.ndarray) -> Any:
        """activations + text [K, T] -> logits [B, K, H, W] as an OrtValue on the execution device."""
        binding = self._decoder.io_binding()
        for name, value in zip(self.meta.activation_names, activations, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input(TEXT, np.ascontiguousarray(text))
        binding.bind_output(LOGITS, self._io_device, self._device_id)
        self._decoder.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def decode(self, activations: list[Any], text: np.ndarray) -> np.ndarray:
        """activations of ``encode_image`` + text [K, T] -> logits [B, K, H, W] on the host."""
        return self._decode_on_device(activations, text).numpy()

    def postprocess(self, logits: Any, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        """logits (an OrtValue from the decoder) -> labels, confidence (and class maps) at ``size``, on the device."""
        binding = self._post.io_binding()
        binding.bind_ortvalue_input(LOGITS, logits)
        binding.bind_cpu_input(SIZE, np.asarray(size, np.int64))
        binding.bind_cpu_input(MAP_CLASSES, np.asarray([logits.shape()[1] if class_maps else 0], np.int64))
        names = [LABELS, CONFIDENCE] + ([CLASS_MAPS] if class_maps else [])
        for name in names:
            binding.bind_output(name)  # to the host: the only copy per frame
        self._post.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        return Prediction(outputs[0], outputs[1], outputs[2] if class_maps else None)

    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        check_inputs(pixels, text, self.meta.input_size, self.meta.text_dim)
        logits = run_chunked(pixels, text, pixels.shape[0], self.max_classes, self.encode_image, self.decode)
        return check_logits(logits, self.name)

    def predict(self, pixels: np.ndarray, text: np.ndarray, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        check_inputs(pixels, text, self.meta.input_size, self.meta.text_dim)
        size = check_size(size)

        def decode(activations: list[Any], chunk: np.ndarray, maps: bool) -> Prediction:
            return self.postprocess(self._decode_on_device(activations, chunk), size, maps)

        prediction = predict_chunked(pixels, text, pixels.shape[0], self.max_classes, class_maps, self.encode_image, decode)
        return check_prediction(prediction, self.name)

    def close(self) -> None:
        self._image = self._decoder = self._post = None


BACKEND = OnnxBackend
