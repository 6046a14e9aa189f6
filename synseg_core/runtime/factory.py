"""Builds backends (and the parts of a ``Segmenter``) from a checkpoint folder or an export folder.

The one place that knows where exports live and when to make one: a checkpoint run on ``onnxruntime`` or
``tensorrt`` uses its export in the user cache (``$XDG_CACHE_HOME/synseg/onnx/<weights>/<H>x<W>_<precision>``,
never inside the checkpoint's folder, which may be a source tree), or the folder the caller names. When a
usable export with the text tower exists, nothing here imports torch; only a missing or stale export
imports ``synseg_core.export`` (and torch) to write one.

The backends are leaves below this module: each is imported by name when asked for, so a deployment
carries only the runtime it uses.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synseg_core.checkpoint import WEIGHTS_NAME, load_config, resolve_checkpoint
from synseg_core.config import SynSegConfig
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.export_format import (
    TEXT_ENCODER,
    ExportError,
    ExportMetadata,
    as_size,
    check_export,
    export_folder,
    read_export,
    sha256_file,
    size_name,
)

log = logging.getLogger("synseg.runtime")

#: backend name -> module holding its Backend class (imported only when that backend is asked for)
BACKEND_MODULES = {
    "torch": "synseg_core.runtime.torch_backend",
    "onnxruntime": "synseg_core.runtime.onnx_backend",
    "tensorrt": "synseg_core.runtime.tensorrt_backend",
}
EXPORT_BACKENDS = ("onnxruntime", "tensorrt")
TextEmbedder = Callable[[Sequence[str], str], np.ndarray]  # (words, template set) -> [K, T] float32
TORCH_MISSING = (
    "exporting a checkpoint to ONNX needs PyTorch: pip install torch 'synseg[onnx]' (torch, onnx, onnxscript); "
    "or export it on another machine with python -m synseg_core.export CHECKPOINT --text-encoder and pass the "
    "folder as onnx_dir (a torch-free install runs it with Segmenter.from_export)"
)


def list_backends() -> list[str]:
    return list(BACKEND_MODULES)


def check_backend(name: str) -> None:
    if name not in BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; choose one of {list_backends()}")


@dataclass(frozen=True)
class SegmenterParts:
    """What a ``Segmenter`` is made of: a backend, a text embedder, the model's config and patch size."""

    backend: Backend
    embed_text: TextEmbedder
    config: SynSegConfig
    patch_size: int


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/synseg, else ~/.cache/synseg."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "synseg"


def checkpoint_sha256(directory: Path) -> str:
    """sha256 of a checkpoint's model.safetensors: identifies its weights without loading them."""
    return sha256_file(Path(directory) / WEIGHTS_NAME)


def default_export_dir(weights_sha: str, input_size: tuple[int, int], precision: str) -> Path:
    """The cache folder of a checkpoint's export: $XDG_CACHE_HOME/synseg/onnx/<weights sha[:16]>/448x448_fp32."""
    return user_cache_dir() / "onnx" / weights_sha[:16] / size_name(input_size, precision)


def _export_module():  # type: ignore[no-untyped-def]
    """``synseg_core.export``, which needs torch; imported only when an export must be written."""
    try:
        import torch  # noqa: F401 - only to turn a missing torch into advice
    except ImportError as exc:
        raise ImportError(TORCH_MISSING) from exc
    return importlib.import_module("synseg_core.export")


def prepare_export(
    checkpoint: str | Path,
    input_size: tuple[int, int] | int | None = None,
    precision: str = "fp32",
    onnx_dir: str | Path | None = None,
    export_if_missing: bool = True,
    exporter: str = "dynamo",
) -> Path:
    """The export folder to run ``checkpoint`` from: checked against its weights, exported on first use.

    ``input_size`` defaults to the checkpoint's. ``onnx_dir`` names an explicit folder (or a file in it),
    which is only ever checked, never rewritten. Otherwise the cache folder (``default_export_dir``) is used,
    and written (with the text tower, so later runs need no torch) when missing or stale, with a log line.
    """
    directory = resolve_checkpoint(checkpoint)
    config = load_config(directory)
    size = as_size(input_size or config.image_size)
    weights = checkpoint_sha256(directory)
    if onnx_dir:
        target = export_folder(onnx_dir)
        meta = read_export(target)
        if meta.source_checkpoint is not None:
            check_export(meta, target, input_size=size, precision=precision, source_checkpoint=weights)
        else:  # exported from a model in Python (export_onnx without source_checkpoint): compare the weights themselves
            export = _export_module()
            from synseg_core.checkpoint import load_model

            check_export(meta, target, weights_sha256=export.weights_sha256(load_model(directory)), input_size=size, precision=precision)
        return target
    target = default_export_dir(weights, size, precision)
    try:
        check_export(read_export(target), target, input_size=size, precision=precision, source_checkpoint=weights)
        return target
    except ExportError as exc:
        reason = "no ONNX export yet" if "missing; export the model first" in str(exc) else f"the export is unusable ({exc})"
    command = f"python -m synseg_core.export {directory} --input-size {size[0]}x{size[1]} --precision {precision} --text-encoder"
    if not export_if_missing:
        raise ExportError(f"{target}: {reason}; run {command}")
    export = _export_module()
    log.info("%s: %s; exporting it now (one-time, may take a minute)", target, reason)
    export.export_checkpoint(directory, target, input_size=size, precisions=[precision], text_encoder=True, exporter=exporter)
    return target


def create_backend(name: str, source: Any, **options: Any) -> Backend:
    """Backend ``name`` over ``source``: a model (nn.Module) for torch, an export folder for the others.

    ``options`` go to the backend's constructor (device, precision, cuda_graphs, max_classes, ...).
    """
    check_backend(name)
    module = importlib.import_module(BACKEND_MODULES[name])
    return module.BACKEND(source, **options)


def export_text_embedder(directory: Path, meta: ExportMetadata, device: str = "cpu") -> TextEmbedder | None:
    """The ONNX text tower of an export, or None when it was exported without one."""
    if meta.text is None or TEXT_ENCODER not in meta.files:
        return None
    from synseg_core.runtime.onnx_text import OnnxTextEmbedder  # needs tokenizers, which only this path uses

    return OnnxTextEmbedder(directory, device=device)


def parts_from_export(directory: str | Path, backend: str = "onnxruntime", text_device: str = "cpu", **options: Any) -> SegmenterParts:
    """A Segmenter's parts from an export folder alone (no checkpoint, no torch): needs the text tower."""
    if backend not in EXPORT_BACKENDS:
        raise ValueError(f"backend must be one of {list(EXPORT_BACKENDS)} for an export folder, got {backend!r}")
    directory = export_folder(directory)
    meta = read_export(directory, verify=False)
    embed = export_text_embedder(directory, meta, text_device)
    if embed is None:
        raise ExportError(
            f"{directory}: exported without the text tower; re-export with --text-encoder, "
            "or use Segmenter.from_checkpoint (PyTorch text tower)"
        )
    runner = create_backend(backend, directory, **options)
    return SegmenterParts(runner, embed, SynSegConfig.from_dict(meta.config), meta.patch_size)


def parts_from_checkpoint(
    path: str | Path,
    backend: str = "torch",
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | int | None = None,
    onnx_dir: str | Path | None = None,
    engine_path: str | Path | None = None,
    export_if_missing: bool = True,
    exporter: str = "dynamo",
    **options: Any,
) -> SegmenterParts:
    """A Segmenter's parts for a checkpoint on ``backend``.

    torch: the model itself (``options``: cuda_graphs, compile, ...). onnxruntime / tensorrt: the checkpoint's
    export (``prepare_export``); with its text tower the torch model is never built. ``engine_path`` (the ROS
    node's parameter name) is the same as ``onnx_dir`` and may name a file inside the export folder.
    """
    check_backend(backend)
    directory = resolve_checkpoint(path)
    if backend == "torch":
        for name, value in (("engine_path", engine_path), ("onnx_dir", onnx_dir)):
            if value:
                raise ValueError(f"{name}={str(value)!r} is for the onnxruntime and tensorrt backends; the torch backend "
                                 "runs the checkpoint itself: leave it empty or choose one of those backends")
        from synseg_core.checkpoint import load_model
        from synseg_core.runtime.torch_backend import TorchBackend, torch_text_embedder

        model = load_model(directory)
        runner: Backend = TorchBackend(model, device=device, precision=precision, **options)
        return SegmenterParts(runner, torch_text_embedder(model), model.config, model.patch_size)
    if backend == "tensorrt":
        from synseg_core.runtime.tensorrt_backend import check_device, require_tensorrt

        require_tensorrt()  # both before a possibly long export
        check_device(device)
    target = prepare_export(directory, input_size, precision, onnx_dir or engine_path, export_if_missing, exporter)
    options.setdefault("verify", False)  # prepare_export has just compared every file's sha256
    runner = create_backend(backend, target, device=device, **options)
    meta = read_export(target, verify=False)
    embed = export_text_embedder(target, meta)
    if embed is None:  # an explicit export without the text tower: the checkpoint's (torch) text tower
        from synseg_core.checkpoint import load_model
        from synseg_core.runtime.torch_backend import torch_text_embedder

        embed = torch_text_embedder(load_model(directory))
    return SegmenterParts(runner, embed, load_config(directory), meta.patch_size)


def torch_options(backend: str, cuda_graphs: bool | None = None, compile: bool = False) -> dict[str, Any]:
    """The torch fast-path options a command line set (``--cuda-graphs``, ``--compile``) as backend options.

    Only the options given (the backend's defaults stay its own); setting them for another backend is an
    error rather than silently ignored.
    """
    given = {"cuda_graphs": cuda_graphs} if cuda_graphs is not None else {}
    if compile:
        given["compile"] = True
    if given and backend != "torch":
        raise ValueError(f"--cuda-graphs and --compile are options of the torch backend, not {backend}")
    return given
