"""Export SynSeg to ONNX: ``python -m synseg_core.export CHECKPOINT [--input-size 448] [--precision fp16]``.

Writes an export folder (layout in ``synseg_core.runtime.export_format``): the image encoder
(pixels -> activations of the extracted blocks), FiLM + decoder with the text embeddings [K, T] as an input
(K dynamic, so the vocabulary changes without a re-export or an engine rebuild), the post-processing graph
(upsample + argmax + best score, so runtimes post-process on their own device), optionally the text tower
with its tokenizer (a deployment without PyTorch), and ``export.json``. The batch axis is dynamic; the
input size is fixed per export because the positional embedding is resampled for one patch grid.

The folder appears atomically: it is assembled beside the target and renamed into place, so a failed
export never leaves half a folder, and an existing export is only replaced by a complete new one.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synseg_core.checkpoint import WEIGHTS_NAME, CheckpointError, load_model, resolve_checkpoint
from synseg_core.runtime.export_format import (
    CLASS_MAPS,
    CONFIDENCE,
    DECODER,
    EMBEDDINGS,
    FILE_NAMES,
    IMAGE_ENCODER,
    LABELS,
    LOGITS,
    MAP_CLASSES,
    METADATA_NAME,
    PIXELS,
    POSTPROCESS,
    PRECISIONS,
    SIZE,
    TEXT,
    TEXT_ENCODER,
    TOKENIZER,
    TOKENS,
    ExportError,
    ExportMetadata,
    TextExport,
    as_size,
    read_export,
    sha256_file,
)
from synseg_core.runtime.factory import checkpoint_sha256, default_export_dir
from synseg_core.runtime.onnx_backend import create_session
from synseg_core.text.prompts import get_templates, list_template_sets

if TYPE_CHECKING:  # torch is imported where an export runs, so that --help and convert_export start at once
    import torch
    from torch import nn
    from tqdm import tqdm

    from synseg_core.model.encoders import TextEncoder
    from synseg_core.model.synseg import SynSeg

log = logging.getLogger("synseg.export")

DEFAULT_OPSET = 18  # the dynamo exporter's native opset; 17 is converted down from it
MIN_OPSET = 17  # LayerNormalization is a single op from 17 on (TensorRT and edge runtimes fuse it)
EXPORTERS = ("dynamo", "legacy")
DEFAULT_MAX_CLASSES = 256
#: ONNX Runtime vs PyTorch on the export example; fails the export instead of shipping a wrong graph
PARITY_TOLERANCE = 1e-3


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes): 'these exact weights'."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def tokenizer_json(tokenizer: Any) -> str:
    """The open_clip CLIP BPE tokenizer as a ``tokenizers`` JSON, so the text path runs without torch.

    Same vocabulary and merges; words are split by CLIP's pattern, mapped byte-wise to unicode and
    merged with '</w>' closing each word, as open_clip's SimpleTokenizer does. Text cleaning (html
    unescape, whitespace, lower case) happens in ``onnx_text.clean_text`` before this runs.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    bpe = models.BPE(vocab=dict(tokenizer.encoder), merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix="")
    result = Tokenizer(bpe)
    words = Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
    result.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(words, behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    data = json.loads(result.to_str())
    data["synseg"] = {"sot_token_id": int(tokenizer.sot_token_id), "eot_token_id": int(tokenizer.eot_token_id)}
    return json.dumps(data)


def _template_patterns() -> dict[str, list[str]]:
    return {name: [template("{}") for template in get_templates(name)] for name in list_template_sets()}


@contextmanager
def _quiet_logs(*names: str) -> Iterator[None]:
    """Only errors from these loggers ('' = root) meanwhile: exporter and quantiser chatter is not progress."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _dynamic_shapes(module: nn.Module, input_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> tuple[Any, ...]:
    """``dynamic_axes`` as torch.export dynamic shapes; one Dim per axis name ties e.g. every batch axis together."""
    import torch

    dims: dict[str, Any] = {}
    specs = tuple(
        {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in dynamic_axes.get(input_name, {}).items()}
        for input_name in input_names
    )
    variadic = any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())
    return (specs,) if variadic else specs


def _export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    exporter: str,
) -> None:
    import torch

    module.eval()
    options: dict[str, Any] = {"dynamo": exporter == "dynamo"}
    if exporter == "dynamo":
        # torch.export cannot derive shapes of a *inputs forward from dynamic_axes: spell them out.
        options.update(external_data=False, verbose=False, dynamic_shapes=_dynamic_shapes(module, input_names, dynamic_axes))
    else:
        options.update(dynamic_axes=dynamic_axes)
    previous = torch.backends.mha.get_fastpath_enabled()
    # The legacy exporter cannot translate the fused attention kernel; the plain path is the same math.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_logs("onnx_ir", "onnxscript", "torch.onnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=output_names, opset_version=opset, **options,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    if not path.is_file():
        raise ExportError(f"{path}: the {exporter} exporter wrote nothing")


def _write_onnx(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def _to_fp16(path: Path) -> None:
    """FP16 weights and arithmetic, float32 inputs/outputs (so every backend feeds the same arrays)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(path)), keep_io_types=True), str(path))


def _to_int8(path: Path) -> None:
    """Dynamic int8 quantisation (weights int8, activations quantised per call) for the CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    # Its "run pre-processing first" hint goes to the root logger; that pre-processing fails on these graphs.
    with _quiet_logs(""):
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    os.replace(quantized, path)


def postprocess_graph(opset: int) -> Any:
    """postprocess.onnx: logits [B, K, h, w] + size int64 [2] + map_classes int64 [1] -> labels, confidence, class_maps.

    The computation of ``torch_backend.postprocess_logits``, winner first, written as ONNX directly because
    the output size is a run-time input: argmax and max over K on the logit grid; every output pixel takes
    the winner of its first tap and the bilinear value of the best map; the cells whose four taps disagree
    (NonZero) are blended over all K and scattered over those. ``class_maps`` holds the first ``map_classes``
    maps resized (channels last: ONNX Runtime's CPU Resize is ~6x faster on NHWC): callers pass K when they
    want them and 0 otherwise, as runtimes compute every output of a graph whether fetched or not.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes: list[Any] = []
    constants: list[Any] = []

    def op(kind: str, *inputs: str, **attributes: Any) -> str:
        name = f"{kind.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(kind, list(inputs), [name], **attributes))
        return name

    def const(*values: int | float) -> str:
        name = f"const_{len(constants)}"
        float_type = isinstance(values[0], float)
        constants.append(helper.make_tensor(name, TensorProto.FLOAT if float_type else TensorProto.INT64, [len(values)], list(values)))
        return name

    def reduce(kind: str, data: str, axis: int, keepdims: int = 0) -> str:  # axes became an input in opset 18 (13 for ReduceSum)
        if kind == "ReduceSum" or opset >= 18:
            return op(kind, data, const(axis), keepdims=keepdims)
        return op(kind, data, axes=[axis], keepdims=keepdims)

    def part(vector: str, index: int) -> str:
        return op("Slice", vector, const(index), const(index + 1))

    def unsqueeze(data: str, *axes: int) -> str:
        return op("Unsqueeze", data, const(*axes))

    def scalar(vector: str) -> str:
        return op("Squeeze", vector, const(0))

    def axis_taps(size_out: str, size_in: str) -> tuple[str, str, str, str, str, str]:
        """What ``torch_backend.axis_taps`` computes, plus each source index's next one: see there."""
        last = op("Sub", size_in, const(1))
        out = op("Range", scalar(const(0)), scalar(size_out), scalar(const(1)))
        scale = op("Div", op("Cast", size_in, to=TensorProto.FLOAT), op("Cast", size_out, to=TensorProto.FLOAT))
        source = op("Max", op("Sub", op("Mul", op("Add", op("Cast", out, to=TensorProto.FLOAT), const(0.5)), scale), const(0.5)), const(0.0))
        first = op("Min", op("Cast", op("Floor", source), to=TensorProto.INT64), last)
        lam = op("Sub", source, op("Cast", first, to=TensorProto.FLOAT))
        sources = op("Range", scalar(const(0)), scalar(size_in), scalar(const(1)))
        following = op("Min", op("Add", sources, const(1)), last)
        grid = (unsqueeze(first, 0), unsqueeze(sources, 1))  # [1, out] against [in, 1]
        start = reduce("ReduceSum", op("Cast", op("Less", *grid), to=TensorProto.INT64), 1)
        count = reduce("ReduceSum", op("Cast", op("Equal", *grid), to=TensorProto.INT64), 1)
        return first, following, lam, start, count, reduce("ReduceMax", count, 0, keepdims=1)

    def interpolation(size_in: str, first: str, following: str, lam: str) -> str:
        """[out, in] float: row o holds 1 - lam(o) at i0(o) and lam(o) at i1(o), so that bilinear resizing is two MatMuls
        (~4x faster than ONNX Runtime's CPU Resize of one full-size map)."""
        sources = unsqueeze(op("Range", scalar(const(0)), scalar(size_in), scalar(const(1))), 0)  # [1, in]
        weight = unsqueeze(lam, 1)
        at_first = op("Cast", op("Equal", unsqueeze(first, 1), sources), to=TensorProto.FLOAT)
        at_next = op("Cast", op("Equal", unsqueeze(op("Gather", following, first), 1), sources), to=TensorProto.FLOAT)
        return op("Add", op("Mul", at_first, op("Sub", const(1.0), weight)), op("Mul", at_next, weight))

    shape = op("Shape", LOGITS)
    batch, classes, height, width = (part(shape, index) for index in range(4))
    out_h, out_w = part(SIZE, 0), part(SIZE, 1)
    y_first, y_next, y_lam, y_start, y_count, rows = axis_taps(out_h, height)
    x_first, x_next, x_lam, x_start, x_count, cols = axis_taps(out_w, width)

    winner = op("ArgMax", LOGITS, axis=1, keepdims=0, select_last_index=0)  # [B, h, w]
    best = reduce("ReduceMax", LOGITS, 1, keepdims=1)  # [B, 1, h, w]
    # the winner of the first tap: a nearest resize with floor, half-pixel centres, picks i0 as axis_taps does
    dense_labels = op("Resize", unsqueeze(op("Cast", winner, to=TensorProto.INT32), 1), "", "", op("Concat", batch, const(1), SIZE, axis=0), mode="nearest", nearest_mode="floor", coordinate_transformation_mode="half_pixel")
    rows_from, cols_from = interpolation(height, y_first, y_next, y_lam), interpolation(width, x_first, x_next, x_lam)
    dense_best = op("MatMul", op("MatMul", rows_from, best), op("Transpose", cols_from, perm=[1, 0]))  # [B, 1, H, W]

    below = op("Gather", winner, y_next, axis=1)
    differ = op("Or", op("Or", op("Not", op("Equal", winner, below)), op("Not", op("Equal", winner, op("Gather", winner, x_next, axis=2)))),
                op("Not", op("Equal", winner, op("Gather", below, x_next, axis=2))))
    reached = op("And", unsqueeze(op("Greater", y_count, const(0)), 1), unsqueeze(op("Greater", x_count, const(0)), 0))
    cells = op("Transpose", op("NonZero", op("And", differ, reached)), perm=[1, 0])  # [N, 3]: b, i, j
    b, i, j = (op("Squeeze", op("Slice", cells, const(k), const(k + 1), const(1)), const(1)) for k in range(3))
    i1, j1 = op("Gather", y_next, i), op("Gather", x_next, j)

    nhwc = op("Transpose", LOGITS, perm=[0, 2, 3, 1])

    def corner(row: str, col: str) -> str:  # [N, 1, K]
        return unsqueeze(op("GatherND", nhwc, op("Concat", unsqueeze(b, 1), unsqueeze(row, 1), unsqueeze(col, 1), axis=1)), 1)

    def span(index: str, start: str, count: str, most: str, lam: str) -> tuple[str, str]:
        step = unsqueeze(op("Range", scalar(const(0)), scalar(most), scalar(const(1))), 0)
        last = unsqueeze(op("Sub", op("Gather", count, index), const(1)), 1)
        at = op("Add", unsqueeze(op("Gather", start, index), 1), op("Min", step, last))  # [N, most], as in torch
        return at, unsqueeze(op("Gather", lam, at), 2)  # [N, most, 1]

    out_rows, row_lam = span(i, y_start, y_count, rows, y_lam)
    out_cols, col_lam = span(j, x_start, x_count, cols, x_lam)

    def lerp(start: str, end: str, weight: str) -> str:  # start + weight * (end - start): one product at full size
        return op("Add", start, op("Mul", weight, op("Sub", end, start)))

    top = lerp(corner(i, j), corner(i, j1), col_lam)  # [N, C, K]
    bottom = lerp(corner(i1, j), corner(i1, j1), col_lam)
    values = lerp(unsqueeze(top, 1), unsqueeze(bottom, 1), unsqueeze(row_lam, 3))  # [N, R, C, K]
    blended_labels = op("Cast", op("ArgMax", values, axis=3, keepdims=0, select_last_index=0), to=TensorProto.INT32)
    blended_best = reduce("ReduceMax", values, 3)
    line = op("Add", op("Mul", unsqueeze(b, 1), out_h), out_rows)  # [N, R]
    target = unsqueeze(op("Add", op("Mul", unsqueeze(line, 2), out_w), unsqueeze(out_cols, 1)), 3)  # [N, R, C, 1]

    out_shape = op("Concat", batch, SIZE, axis=0)
    flat = const(-1)
    nodes.append(helper.make_node("Reshape", [op("ScatterND", op("Reshape", dense_labels, flat), target, blended_labels), out_shape], [LABELS]))
    nodes.append(helper.make_node("Sigmoid", [op("Reshape", op("ScatterND", op("Reshape", dense_best, flat), target, blended_best), out_shape)], [CONFIDENCE]))
    asked = op("Slice", nhwc, const(0), MAP_CLASSES, const(3))  # the first map_classes maps (0: none)
    class_sizes = op("Concat", batch, SIZE, MAP_CLASSES, axis=0)
    resized = op("Resize", asked, "", "", class_sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    nodes.append(helper.make_node("Transpose", [op("Sigmoid", resized)], [CLASS_MAPS], perm=[0, 3, 1, 2]))

    graph = helper.make_graph(
        nodes, "synseg_postprocess",
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["batch", "classes", "height", "width"]),
         helper.make_tensor_value_info(SIZE, TensorProto.INT64, [2]),
         helper.make_tensor_value_info(MAP_CLASSES, TensorProto.INT64, [1])],
        [helper.make_tensor_value_info(LABELS, TensorProto.INT32, ["batch", "out_height", "out_width"]),
         helper.make_tensor_value_info(CONFIDENCE, TensorProto.FLOAT, ["batch", "out_height", "out_width"]),
         helper.make_tensor_value_info(CLASS_MAPS, TensorProto.FLOAT, ["batch", "map_classes", "out_height", "out_width"])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="synseg")
    onnx.checker.check_model(model, full_check=True)
    return model


def _convert(folder: Path, roles: Sequence[str], precision: str) -> None:
    """Turn the FP32 network graphs of ``roles`` in ``folder`` into ``precision`` in place.

    The post-processing graph stays FP32 (it compares logits; its cost is memory, not arithmetic).
    """
    convert = {"fp16": _to_fp16, "int8": _to_int8}[precision]
    for role in roles:
        if FILE_NAMES[role].endswith(".onnx") and role != POSTPROCESS:
            convert(folder / FILE_NAMES[role])


def _check_parity(path: Path, feeds: dict[str, np.ndarray], expected: Sequence[torch.Tensor]) -> float:
    """Run the fresh graph in ONNX Runtime on the export example; the largest deviation from PyTorch."""
    session = create_session(path, ["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    error = max(float(np.abs(out - ref.cpu().numpy()).max()) for out, ref in zip(outputs, expected, strict=True))
    if error > PARITY_TOLERANCE:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {error:.2e} (> {PARITY_TOLERANCE}); not using this export")
    return error


def _check_replaceable(target: Path) -> None:
    """An existing ``target`` may only be replaced if it is empty or an export (never a user's other files)."""
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / METADATA_NAME).is_file())):
        raise ExportError(f"{target}: exists and is not a SynSeg export folder; choose another --out")


@contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    """A scratch folder beside ``target`` that replaces it if the block succeeds and vanishes if it fails.

    The old ``target`` is moved aside, the new one renamed in, then the old one removed: a crash at any point
    leaves a complete export (the old one, at worst renamed aside as .NAME.old-PID) and never a mix of two.
    """
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _check_replaceable(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(
    model: SynSeg,
    out_dir: str | Path,
    input_size: int | tuple[int, int] | None = None,
    precision: str = "fp32",
    text_encoder: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    max_classes: int = DEFAULT_MAX_CLASSES,
    source_checkpoint: str | Path | None = None,
    check: bool = True,
    progress: bool = False,
) -> ExportMetadata:
    """Export ``model`` into the folder ``out_dir`` (replaced atomically) and return its metadata.

    ``input_size`` (default: the model's) is fixed per export; batch and K are dynamic. ``precision``
    fp16 keeps float32 I/O; int8 is dynamic quantisation for the ONNX Runtime CPU path. With ``check``
    the FP32 graphs are run in ONNX Runtime on the export example and compared with PyTorch.
    ``source_checkpoint`` (a checkpoint directory) records its model.safetensors sha256.
    """
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if max_classes < 1:
        raise ValueError(f"max_classes must be >= 1, got {max_classes}")
    size = as_size(input_size or model.config.image_size)
    patch = model.patch_size
    if any(s <= 0 or s % patch for s in size):
        raise ValueError(f"input size {size[0]}x{size[1]} must be positive multiples of the patch size {patch}")
    target = Path(out_dir)
    was_training = model.training
    model.eval()
    steps = 2 + int(text_encoder) + int(precision != "fp32")
    try:
        with _staged_folder(target) as staging, tqdm(total=steps, desc="export", unit="step", disable=not progress) as bar:
            parity = _export_image_and_decoder(model, staging, size, opset, exporter, check, bar)
            _write_onnx(postprocess_graph(opset), staging / FILE_NAMES[POSTPROCESS])
            roles = [IMAGE_ENCODER, DECODER, POSTPROCESS]
            text_meta = None
            if text_encoder:
                bar.set_postfix_str("text encoder")
                context, trim = _export_text_encoder(model, staging / FILE_NAMES[TEXT_ENCODER], opset, exporter, check)
                (staging / FILE_NAMES[TOKENIZER]).write_text(tokenizer_json(model.text_encoder.tokenizer))
                text_meta = TextExport(context_length=context, templates=_template_patterns(), trim_tokens=trim)
                roles += [TEXT_ENCODER, TOKENIZER]
                bar.update()
            if precision != "fp32":
                bar.set_postfix_str(precision)
                _convert(staging, roles, precision)
                bar.update()
            meta = ExportMetadata(
                backbone=model.config.clip_model,
                config=model.config.to_dict(),
                input_size=size,
                patch_size=patch,
                vision_width=model.image_encoder.width,
                text_dim=model.text_dim,
                extract_layers=tuple(model.config.extract_layers),
                preprocessing={
                    "resize": "bilinear to input_size, aspect ratio not kept (cv2.INTER_LINEAR)",
                    "scale": 1 / 255,
                    "mean": list(model.config.mean),
                    "std": list(model.config.std),
                    "channels": "RGB",
                    "layout": "NCHW float32",
                },
                opset=opset,
                precision=precision,
                weights_sha256=weights_sha256(model),
                files={role: sha256_file(staging / FILE_NAMES[role]) for role in roles},
                exporter=exporter,
                max_classes=max_classes,
                versions=_versions(),
                parity=parity,
                source_checkpoint=_checkpoint_sha256(source_checkpoint),
                text=text_meta,
            )
            (staging / METADATA_NAME).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    finally:
        model.train(was_training)
    log.info("exported %s (%dx%d, %s) to %s", model.config.clip_model, size[0], size[1], precision, target)
    return meta


def _export_image_and_decoder(
    model: SynSeg, folder: Path, size: tuple[int, int], opset: int, exporter: str, check: bool, bar: tqdm
) -> dict[str, float]:
    """Write image_encoder.onnx and decoder.onnx into ``folder``; with ``check`` returns their parity errors."""
    import torch
    import torch.nn.functional as F

    from synseg_core.model.graphs import DecoderGraph, ImageEncoderGraph

    # Examples of size >= 2 on every dynamic axis: the dynamo exporter would specialise a size-1 axis.
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    pixels = torch.randn(2, 3, *size, generator=generator).to(device)
    text = F.normalize(torch.randn(2, model.text_dim, generator=generator), dim=-1).to(device)
    with torch.no_grad():
        # An eager pass first: it also caches the positional embedding for this grid as a real tensor,
        # so the graph carries it as a constant instead of a bicubic resize.
        features = model.encode_image(pixels)
        logits = model.decode(features, text).logits
    names = [f"act{i}" for i in range(len(features.activations))]
    batch_axis = {0: "batch"}
    image_path, decoder_path = folder / FILE_NAMES[IMAGE_ENCODER], folder / FILE_NAMES[DECODER]
    bar.set_postfix_str("image encoder")
    _export_graph(
        ImageEncoderGraph(model), (pixels,), image_path, [PIXELS], names,
        {PIXELS: batch_axis, **{n: batch_axis for n in names}}, opset, exporter,
    )
    bar.update()
    bar.set_postfix_str("decoder")
    _export_graph(
        DecoderGraph(model, features.grid), (*features.activations, text), decoder_path, [*names, TEXT], [LOGITS],
        {**{n: batch_axis for n in names}, TEXT: {0: "classes"}, LOGITS: {0: "batch", 1: "classes"}}, opset, exporter,
    )
    bar.update()
    if not check:
        return {}
    activations = {n: a.cpu().numpy() for n, a in zip(names, features.activations, strict=True)}
    return {
        IMAGE_ENCODER: _check_parity(image_path, {PIXELS: pixels.cpu().numpy()}, features.activations),
        DECODER: _check_parity(decoder_path, activations | {TEXT: text.cpu().numpy()}, [logits]),
    }


def can_trim_tokens(encoder: TextEncoder) -> bool:
    """Whether the positions after the last end token cannot change an embedding: a causal tower pooled at the end token."""
    return encoder.pool_type == "argmax" and encoder.attn_mask is not None


def _export_text_encoder(model: SynSeg, path: Path, opset: int, exporter: str, check: bool) -> tuple[int, bool]:
    """Write text_encoder.onnx; returns the context length and whether runtimes may trim the token axis.

    With a causal tower and the dynamo exporter the token axis is dynamic (the example is cut to 8 positions,
    so no axis is exported at a fixed size); runtimes then run each batch only up to its longest prompt. The
    legacy exporter bakes the sequence length into the attention reshapes, so its tower keeps the full context.
    """
    import torch

    from synseg_core.model.graphs import TextEncoderGraph

    encoder = model.text_encoder
    prompts = [template("word") for template in get_templates("single")] * 2
    tokens = encoder.tokenizer(prompts + ["another word"] * 2).reshape(2, 2, -1).to(encoder.token_embedding.weight.device)
    context = int(tokens.shape[-1])
    trim = can_trim_tokens(encoder) and exporter == "dynamo"
    axes = {0: "classes", 1: "prompts", 2: "length"} if trim else {0: "classes", 1: "prompts"}
    example = tokens[..., : min(8, context)] if trim else tokens
    _export_graph(TextEncoderGraph(encoder), (example,), path, [TOKENS], [EMBEDDINGS], {TOKENS: axes, EMBEDDINGS: {0: "classes"}}, opset, exporter)
    if check:
        for feed in (tokens, example) if trim else (tokens,):
            with torch.no_grad():
                expected = TextEncoderGraph(encoder)(feed)
            _check_parity(path, {TOKENS: feed.cpu().numpy()}, [expected])
    return context, trim


def convert_export(source: str | Path, out_dir: str | Path, precision: str) -> ExportMetadata:
    """An FP16 or int8 variant of an FP32 export folder, without PyTorch or a re-export."""
    if precision not in ("fp16", "int8"):
        raise ValueError(f"convert_export makes fp16 or int8 variants, got {precision!r}")
    source = Path(source)
    meta = read_export(source)
    if meta.precision != "fp32":
        raise ExportError(f"{source}: is a {meta.precision} export; convert from an fp32 one")
    target = Path(out_dir)
    with _staged_folder(target) as staging:
        for role in meta.files:
            shutil.copyfile(source / FILE_NAMES[role], staging / FILE_NAMES[role])
        _convert(staging, list(meta.files), precision)
        files = {role: sha256_file(staging / FILE_NAMES[role]) for role in meta.files}
        converted = dataclasses.replace(meta, precision=precision, files=files, versions=_versions())
        (staging / METADATA_NAME).write_text(json.dumps(converted.to_dict(), indent=2) + "\n")
    log.info("converted %s to %s in %s", source, precision, target)
    return converted


def _checkpoint_sha256(checkpoint: str | Path | None) -> str | None:
    if checkpoint is None:
        return None
    return sha256_file(resolve_checkpoint(checkpoint) / WEIGHTS_NAME)


def _versions() -> dict[str, str]:
    import onnx
    import torch

    from synseg_core import __version__

    return {"torch": torch.__version__, "onnx": onnx.__version__, "synseg": __version__}


def parse_size(text: str) -> tuple[int, int]:
    """'448' -> (448, 448); '480x640' -> (480, 640) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"input size must be N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"input size must be N or HxW with positive numbers, got {text!r}")
    return (values[0], values[-1])


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    input_size: int | tuple[int, int] | None = None,
    precisions: Sequence[str] = ("fp32",),
    **options: Any,
) -> list[Path]:
    """Export a checkpoint directory in one or more precisions; returns the folders.

    The default folder of each is the user cache's (``factory.default_export_dir``), where
    ``Segmenter.from_checkpoint`` looks; ``out_dir`` names the folder of a single precision. The model is exported once; further precisions are converted from that FP32 export.
    """
    precisions = list(dict.fromkeys(precisions))
    if out_dir is not None and len(precisions) > 1:
        raise ValueError("--out names one export folder; give one --precision, or leave --out out for the user cache")
    directory = resolve_checkpoint(checkpoint)
    model = load_model(directory)
    size = as_size(input_size or model.config.image_size)
    weights = checkpoint_sha256(directory)
    targets = [Path(out_dir) if out_dir is not None else default_export_dir(weights, size, p) for p in precisions]
    if len(precisions) == 1:
        export_onnx(model, targets[0], input_size=size, precision=precisions[0], source_checkpoint=directory, **options)
        return targets
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fp32-", dir=targets[0].parent) as scratch:
        source = targets[precisions.index("fp32")] if "fp32" in precisions else Path(scratch) / "fp32"
        export_onnx(model, source, input_size=size, precision="fp32", source_checkpoint=directory, **options)
        for precision, target in zip(precisions, targets, strict=True):
            if precision != "fp32":
                convert_export(source, target, precision)
    return targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.export",
        description="Export a SynSeg checkpoint to ONNX for the onnxruntime and tensorrt backends: image encoder, "
        "FiLM + decoder with the text embeddings as an input (the vocabulary changes at run time, no re-export), "
        "the post-processing graph, optionally the text tower, and export.json (checked at load time). This command "
        "writes ONNX only; TensorRT engines are built on the robot (command below).",
        epilog="Examples:\n"
        "  python -m synseg_core.export runs/synseg     # -> $XDG_CACHE_HOME/synseg/onnx/<weights>/224x224_fp32\n"
        "  python -m synseg_core.export runs/synseg --input-size 448 --precision fp32 fp16 int8 --text-encoder\n"
        "  python -m synseg_core.export runs/synseg --input-size 480x640 --precision fp16 --text-encoder --out deploy/cam\n"
        "Then: Segmenter.from_checkpoint('runs/synseg', backend='onnxruntime', input_size=448) finds the cached\n"
        "export, or, without the checkpoint or torch, Segmenter.from_export('deploy/cam'). Prebuild the TensorRT\n"
        "engines of an fp32/fp16 export (TensorRT refuses int8 ones) on the robot with:\n"
        "  python -m synseg_core.runtime.tensorrt_backend deploy/cam",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="SynSeg checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--out", "-o", type=Path, help="export folder (default: $XDG_CACHE_HOME/synseg/onnx/<weights sha256>/<H>x<W>_<precision>, where Segmenter.from_checkpoint looks)")
    parser.add_argument("--input-size", type=parse_size, help="network input N or HxW, multiples of the patch size (default: the model's)")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=PRECISIONS, metavar="{fp32,fp16,int8}",
        help="one or more of fp32; fp16 (CUDA/TensorRT); int8 (dynamic, ONNX Runtime CPU) (default: fp32)",
    )
    parser.add_argument("--text-encoder", action="store_true", help="also export the text tower + tokenizer (run without PyTorch)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= {MIN_OPSET} (default: %(default)s)")
    parser.add_argument("--exporter", default="dynamo", choices=EXPORTERS, help="torch.onnx exporter; legacy is faster but deprecated (default: %(default)s)")
    parser.add_argument("--max-classes", type=int, default=DEFAULT_MAX_CLASSES, help="classes per decoder call; longer vocabularies run in chunks (default: %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch check of the exported graphs")
    parser.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        targets = export_checkpoint(
            args.checkpoint, args.out, input_size=args.input_size, precisions=args.precision, text_encoder=args.text_encoder,
            opset=args.opset, exporter=args.exporter, max_classes=args.max_classes, check=not args.no_check, progress=not args.quiet,
        )
    except (CheckpointError, ExportError, ValueError, ImportError, OSError) as exc:
        log.error("export failed: %s", exc)
        return 1
    if not args.quiet:
        print("\n".join(str(t) for t in targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
