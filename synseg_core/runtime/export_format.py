"""What an export folder is: its files, ``export.json`` (``ExportMetadata``), and the checks run before use.

An export folder (written by ``python -m synseg_core.export``) holds::

    export.json          ExportMetadata: backbone, input size, preprocessing, blocks, opset, precision,
                         source-weights hash, sha256 of every file below
    image_encoder.onnx   pixels [B, 3, H, W] float32 -> act0..act{n-1} [B, 1 + h*w, width] float32
    decoder.onnx         act0..act{n-1} + text [K, T] float32 -> logits [B, K, H, W] float32
    postprocess.onnx     logits [B, K, H, W] + size int64 [2] + map_classes int64 [1] (0 or K) -> labels
                         [B, H', W'] int32 (argmax of the bilinearly upsampled logits), confidence [B, H', W']
                         float32 (sigmoid of the best logit), class_maps [B, map_classes, H', W'] float32
                         (sigmoid of every upsampled logit, only when asked for: map_classes = K)
    text_encoder.onnx    optional: tokens [K, P, C] int64 (C <= context length) -> prompt-ensemble embeddings [K, T]
    tokenizer.json       optional, with text_encoder.onnx: the CLIP BPE tokenizer (``tokenizers`` format)

The vocabulary is an *input* of ``decoder.onnx`` (K dynamic), so changing it never needs a re-export or an
engine rebuild. This module needs numpy and the standard library only: the ONNX Runtime and TensorRT
backends, the exporter and the factory all read the format from here.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXPORT_FORMAT = "synseg-onnx"
#: 2: postprocess.onnx (post-processing on the execution device) and a dynamic token axis in text_encoder.onnx
#: 3: postprocess.onnx computes labels winner first and class maps only when its map_classes input asks
FORMAT_VERSION = 3
METADATA_NAME = "export.json"
IMAGE_ENCODER = "image_encoder"
DECODER = "decoder"
POSTPROCESS = "postprocess"
TEXT_ENCODER = "text_encoder"
TOKENIZER = "tokenizer"
#: role -> file name inside an export folder
FILE_NAMES = {
    IMAGE_ENCODER: "image_encoder.onnx",
    DECODER: "decoder.onnx",
    POSTPROCESS: "postprocess.onnx",
    TEXT_ENCODER: "text_encoder.onnx",
    TOKENIZER: "tokenizer.json",
}
REQUIRED_ROLES = (IMAGE_ENCODER, DECODER, POSTPROCESS)
PRECISIONS = ("fp32", "fp16", "int8")
# Tensor names inside the graphs.
PIXELS = "pixels"
TEXT = "text"
LOGITS = "logits"
SIZE = "size"
MAP_CLASSES = "map_classes"
LABELS = "labels"
CONFIDENCE = "confidence"
CLASS_MAPS = "class_maps"
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
    #: tokens may be cut after the longest prompt's end token: the token axis is dynamic and the tower is causal
    #: with end-token pooling, so the positions after it cannot change the embedding
    trim_tokens: bool = False


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
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_size(size: int | Iterable[int]) -> tuple[int, int]:
    """448 or (480, 640) -> (H, W)."""
    if isinstance(size, int):
        return (size, size)
    height, width = (int(s) for s in size)
    return (height, width)


def size_name(input_size: tuple[int, int], precision: str) -> str:
    """The folder name of an export in a cache: 448x448_fp32."""
    return f"{input_size[0]}x{input_size[1]}_{precision}"


def export_folder(path: str | Path) -> Path:
    """An export folder given as itself or as a file inside it (export.json, decoder.onnx, ...)."""
    path = Path(path)
    return path.parent if path.is_file() else path


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
    for role in REQUIRED_ROLES:
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
    source_checkpoint: str | None = None,
) -> None:
    """Raise ExportError naming every way ``meta`` differs from what the caller is about to use.

    ``weights_sha256`` compares the model's state dict (needs the model); ``source_checkpoint`` compares the
    checkpoint's model.safetensors sha256, which needs no model and no torch.
    """
    problems = []
    if weights_sha256 is not None and meta.weights_sha256 != weights_sha256:
        problems.append("it was exported from other weights (stale export of an older checkpoint?)")
    if source_checkpoint is not None and meta.source_checkpoint != source_checkpoint:
        problems.append("it was not exported from this checkpoint's model.safetensors (stale export of an older checkpoint?)")
    if input_size is not None and tuple(meta.input_size) != tuple(input_size):
        problems.append(f"it was exported for input size {meta.input_size[0]}x{meta.input_size[1]}, not {input_size[0]}x{input_size[1]}")
    if precision is not None and meta.precision != precision:
        problems.append(f"its precision is {meta.precision}, not {precision}")
    if problems:
        raise ExportError(f"{directory}: " + "; ".join(problems) + "; re-export with python -m synseg_core.export")
