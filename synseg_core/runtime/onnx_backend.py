"""ONNX Runtime backend, and the export folder format that the ONNX Runtime and TensorRT backends share.

An export folder (written by ``python -m synseg_core.export``) holds::

    export.json          ExportMetadata: backbone, input size, preprocessing, blocks, opset, precision,
                         source-weights hash, sha256 of every file below
    image_encoder.onnx   pixels [B, 3, H, W] float32 -> act0..act{n-1} [B, 1 + h*w, width] float32
    decoder.onnx         act0..act{n-1} + text [K, T] float32 -> logits [B, K, H, W] float32
    text_encoder.onnx    optional: tokens [K, P, C] int64 -> prompt-ensemble embeddings [K, T] float32
    tokenizer.json       optional, with text_encoder.onnx: the CLIP BPE tokenizer (``tokenizers`` format)

The vocabulary is an *input* of ``decoder.onnx`` (K dynamic), so changing it never needs a re-export or an
engine rebuild. Nothing here imports torch or onnxruntime at module level: the TensorRT backend reuses the
format code, and a deployment may carry only one runtime.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synseg_core.runtime.backend import Backend

if TYPE_CHECKING:
    from synseg_core.model.synseg import SynSeg
    from synseg_core.runtime.segmenter import Segmenter

log = logging.getLogger("synseg.runtime.onnx")

EXPORT_FORMAT = "synseg-onnx"
FORMAT_VERSION = 1
METADATA_NAME = "export.json"
IMAGE_ENCODER = "image_encoder"
DECODER = "decoder"
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
#: role -> file name inside an export folder
FILE_NAMES = {
    IMAGE_ENCODER: "image_encoder.onnx",
    DECODER: "decoder.onnx",
    TEXT_ENCODER: "text_encoder.onnx",
    TOKENIZER: "tokenizer.json",
}
PRECISIONS = ("fp32", "fp16", "int8")
PIXELS = "pixels"
TEXT = "text"
LOGITS = "logits"
TOKENS = "tokens"
EMBEDDINGS = "embeddings"


class ExportError(ValueError):
    """An export folder is missing, corrupt, stale, or was made for other settings than requested."""


@dataclass(frozen=True)
class TextExport:
    """What the no-PyTorch text path needs beside ``text_encoder.onnx``."""

    context_length: int
    #: template set -> patterns with one ``{}`` for the word, e.g. "a photo of a {}."
    templates: dict[str, list[str]]


@dataclass(frozen=True)
class ExportMetadata:
    """``export.json``: everything a runtime checks before it trusts the ONNX files beside it."""

    backbone: str
    config: dict[str, Any]  # the SynSegConfig as a dict (prompt set, threshold, ...)
    input_size: tuple[int, int]  # (H, W) the graphs were exported for
    patch_size: int
    vision_width: int
    text_dim: int
    extract_layers: tuple[int, ...]
    preprocessing: dict[str, Any]  # resize, scale, mean, std, channel order, layout
    opset: int
    precision: str
    weights_sha256: str  # the source model's weights (see ``synseg_core.export.weights_sha256``)
    files: dict[str, str]  # role -> sha256 of FILE_NAMES[role]
    exporter: str
    max_classes: int  # classes per decoder call; longer vocabularies are decoded in chunks
    versions: dict[str, str] = field(default_factory=dict)  # torch, onnx, synseg at export time
    parity: dict[str, float] = field(default_factory=dict)  # role -> max |ONNX Runtime - PyTorch| at export (FP32)
    source_checkpoint: str | None = None  # the checkpoint's model.safetensors sha256, when exported from one
    text: TextExport | None = None
    format: str = EXPORT_FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def activation_names(self) -> list[str]:
        return [f"act{i}" for i in range(len(self.extract_layers))]

    @property
    def grid(self) -> tuple[int, int]:
        return (self.input_size[0] // self.patch_size, self.input_size[1] // self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportMetadata:
        values = dict(data)
        values["input_size"] = tuple(values["input_size"])
        values["extract_layers"] = tuple(values["extract_layers"])
        if values.get("text") is not None:
            values["text"] = TextExport(**values["text"])
        return cls(**values)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_size(size: int | Iterable[int]) -> tuple[int, int]:
    """448 or (480, 640) -> (H, W)."""
    if isinstance(size, int):
        return (size, size)
    height, width = (int(s) for s in size)
    return (height, width)


def default_export_dir(checkpoint_dir: Path, input_size: tuple[int, int], precision: str) -> Path:
    """Where ``from_checkpoint`` looks for (and on first use writes) an export: CKPT/onnx/448x448_fp32."""
    return Path(checkpoint_dir) / "onnx" / f"{input_size[0]}x{input_size[1]}_{precision}"


def read_export(directory: str | Path, verify: bool = True) -> ExportMetadata:
    """Read and check ``directory/export.json``; with ``verify`` every file's sha256 is compared too."""
    directory = Path(directory)
    meta_path = directory / METADATA_NAME
    if not meta_path.is_file():
        raise ExportError(f"{meta_path}: missing; export the model first: python -m synseg_core.export CHECKPOINT --out {directory}")
    try:
        data = json.loads(meta_path.read_text())
        if data.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {EXPORT_FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')} is not the supported {FORMAT_VERSION}; re-export")
        meta = ExportMetadata.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"{meta_path}: not a valid SynSeg export description: {exc}") from exc
    for role in (IMAGE_ENCODER, DECODER):
        if role not in meta.files:
            raise ExportError(f"{meta_path}: lists no {FILE_NAMES[role]}")
    for role, expected in meta.files.items():
        path = directory / FILE_NAMES[role]
        if not path.is_file():
            raise ExportError(f"{path}: missing (listed in {meta_path}); re-export the model")
        if verify and sha256_file(path) != expected:
            raise ExportError(f"{path}: corrupt or replaced (sha256 differs from {meta_path}); re-export the model")
    return meta


def check_export(
    meta: ExportMetadata,
    directory: Path,
    weights_sha256: str | None = None,
    input_size: tuple[int, int] | None = None,
    precision: str | None = None,
) -> None:
    """Raise ExportError naming every way ``meta`` differs from what the caller is about to use."""
    problems = []
    if weights_sha256 is not None and meta.weights_sha256 != weights_sha256:
        problems.append("it was exported from other weights (stale export of an older checkpoint?)")
    if input_size is not None and tuple(meta.input_size) != tuple(input_size):
        problems.append(f"it was exported for input size {meta.input_size[0]}x{meta.input_size[1]}, not {input_size[0]}x{input_size[1]}")
    if precision is not None and meta.precision != precision:
        problems.append(f"its precision is {meta.precision}, not {precision}")
    if problems:
        raise ExportError(f"{directory}: " + "; ".join(problems) + "; re-export with python -m synseg_core.export")


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


def check_logits(logits: np.ndarray, backend: str) -> np.ndarray:
    if not np.isfinite(logits).all():
        raise FloatingPointError(f"the {backend} backend produced NaN/inf logits; refusing to return a wrong mask")
    return logits


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
    bounds memory without changing a single logit. Returns logits [B, K, H, W].
    """
    rows = []
    for start in range(0, pixels.shape[0], max_batch):
        features = encode(pixels[start : start + max_batch])
        parts = [decode(features, text[k : k + max_classes]) for k in range(0, text.shape[0], max_classes)]
        rows.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1))
    return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)


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
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph/... errors
        raise ExportError(f"{path}: onnxruntime cannot load it ({exc}); re-export the model") from exc


class OnnxBackend(Backend):
    """Runs ``image_encoder.onnx`` then ``decoder.onnx``; the activations stay on the execution device.

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
        self.providers = self._image.get_providers()

    def encode_image(self, pixels: np.ndarray) -> list[Any]:
        """pixels [B, 3, H, W] -> activations (onnxruntime OrtValues on the execution device)."""
        binding = self._image.io_binding()
        binding.bind_cpu_input(PIXELS, np.ascontiguousarray(pixels))
        for name in self.meta.activation_names:
            binding.bind_output(name, self._io_device, self._device_id)
        self._image.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def decode(self, activations: list[Any], text: np.ndarray) -> np.ndarray:
        """activations of ``encode_image`` + text [K, T] -> logits [B, K, H, W]."""
        binding = self._decoder.io_binding()
        for name, value in zip(self.meta.activation_names, activations, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_cpu_input(TEXT, np.ascontiguousarray(text))
        binding.bind_output(LOGITS)
        self._decoder.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        check_inputs(pixels, text, self.meta.input_size, self.meta.text_dim)
        logits = run_chunked(pixels, text, pixels.shape[0], self.max_classes, self.encode_image, self.decode)
        return check_logits(logits, self.name)

    def close(self) -> None:
        self._image = self._decoder = None


def export_folder(path: str | Path) -> Path:
    """An export folder given as itself or as a file inside it (export.json, decoder.onnx, ...)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def prepare_export(
    directory: Path,
    model: SynSeg,
    input_size: tuple[int, int] | int | None,
    precision: str,
    onnx_dir: str | Path | None = None,
    export_if_missing: bool = True,
    exporter: str = "dynamo",
) -> Path:
    """The export folder for a checkpoint: checked against its weights, (re-)exported on first use.

    ``input_size`` defaults to the model's. ``onnx_dir`` names an explicit folder (or a file in it), which is
    only ever checked, never rewritten; the default folder (``default_export_dir``, or under
    ``user_cache_dir()`` when the checkpoint folder is read-only) is exported when missing or stale, with a
    log line.
    """
    from synseg_core.export import export_onnx, weights_sha256

    input_size = as_size(input_size or model.config.image_size)
    weights = weights_sha256(model)
    if onnx_dir:
        target = export_folder(onnx_dir)
        meta = read_export(target)
        check_export(meta, target, weights_sha256=weights, input_size=input_size, precision=precision)
        return target
    local = default_export_dir(directory, input_size, precision)
    # A read-only checkpoint (an installed package, a read-only mount) gets its export in the user's cache.
    target = local if os.access(directory, os.W_OK) else user_cache_dir() / "onnx" / weights[:16] / local.name
    reason = None
    for candidate in dict.fromkeys([local, target]):
        if not (candidate / METADATA_NAME).is_file():
            reason = reason or "no ONNX export yet"
            continue
        try:
            check_export(read_export(candidate), candidate, weights_sha256=weights, input_size=input_size, precision=precision)
            return candidate
        except ExportError as exc:
            reason = f"the export is unusable ({exc})"
    if not export_if_missing:
        raise ExportError(f"{target}: {reason}; run python -m synseg_core.export {directory} --input-size {input_size[0]}x{input_size[1]} --precision {precision}")
    log.info("%s: %s; exporting it now (one-time, may take a minute)", target, reason)
    export_onnx(model, target, input_size=input_size, precision=precision, exporter=exporter, source_checkpoint=directory)
    return target


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/synseg, else ~/.cache/synseg."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synseg"


def from_checkpoint(
    directory: Path,
    model: SynSeg,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | int | None = None,
    onnx_dir: str | Path | None = None,
    engine_path: str | Path | None = None,
    export_if_missing: bool = True,
    exporter: str = "dynamo",
    providers: list[Any] | None = None,
    threads: int | None = None,
    max_classes: int | None = None,
) -> OnnxBackend:
    """The factory ``Segmenter.from_checkpoint(..., backend="onnxruntime")`` calls.

    Uses ``onnx_dir`` if given, else CKPT/onnx/<H>x<W>_<precision>, exporting it (with ``exporter``) on first
    use. ``engine_path`` (the ROS node's parameter name) is the same as ``onnx_dir`` and may also name a file
    inside the export folder.
    """
    target = prepare_export(Path(directory), model, input_size, precision, onnx_dir or engine_path, export_if_missing, exporter)
    return OnnxBackend(target, device=device, providers=providers, threads=threads, max_classes=max_classes)


def segmenter_from_export(
    directory: str | Path,
    backend: str = "onnxruntime",
    threshold: float | None = None,
    template_set: str | None = None,
    text_device: str = "cpu",
    **backend_options: Any,
) -> Segmenter:
    """A Segmenter from an export folder alone (no checkpoint, text tower in ONNX too).

    Needs an export made with ``--text-encoder``. ``backend`` is 'onnxruntime' or 'tensorrt';
    ``backend_options`` go to its constructor.
    """
    from synseg_core.config import SynSegConfig
    from synseg_core.runtime.onnx_text import OnnxTextEmbedder
    from synseg_core.runtime.segmenter import Segmenter

    runner: Backend
    if backend == "onnxruntime":
        runner = OnnxBackend(directory, **backend_options)
    elif backend == "tensorrt":
        from synseg_core.runtime.tensorrt_backend import TensorRTBackend

        runner = TensorRTBackend(directory, **backend_options)
    else:
        raise ValueError(f"backend must be 'onnxruntime' or 'tensorrt' for an export folder, got {backend!r}")
    meta = read_export(directory, verify=False)
    return Segmenter(
        runner, OnnxTextEmbedder(directory, device=text_device), SynSegConfig.from_dict(meta.config),
        threshold=threshold, template_set=template_set, patch_size=meta.patch_size,
    )
