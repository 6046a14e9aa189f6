"""PyTorch backend: any segmentation module on CPU or GPU, FP32/FP16/BF16, optionally as replayed CUDA graphs.

The module is anything with ``forward(images [B, 3, H, W], text [K, T]) -> logits [B, K, h, w]``, ``.config``
and ``.patch_size`` (SynSeg, the MaskCLIP baseline, ...). Post-processing runs as torch ops on the module's
device (``postprocess_logits``), so a GPU frame copies 8 bytes per pixel back to the host instead of 4 * K.

The GPU fast path: ``cuda_graphs`` (default on with CUDA) captures network + post-processing once per
(batch, input size, K, output size, class maps) and replays it, which removes the per-kernel launch cost that
dominates a few-millisecond network; ``compile`` runs the module through ``torch.compile`` first.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synseg_core.runtime.backend import Backend, Prediction, check_logits, check_prediction, check_size

log = logging.getLogger("synseg.runtime.torch")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: classes upsampled at once in post-processing; bounds memory (K x H x W floats) for long vocabularies
POST_CLASSES_PER_PASS = 128
#: values [cells, R, C, K] blended at once at class boundaries in post-processing; bounds memory
POST_VALUES_PER_PASS = 1 << 22
#: share of output pixels in boundary cells above which upsampling every map is the faster way
DENSE_ABOVE = 0.5
DEFAULT_MAX_GRAPHS = 8
WARMUP_RUNS = 2  # eager runs on a side stream before capture (cuDNN/cuBLAS pick their kernels, caches fill)


def torch_text_embedder(model: Any) -> Callable[[Sequence[str], str], np.ndarray]:
    """The model's frozen text tower behind the shared embedding cache: (words, template set) -> [K, T]."""

    def embed(words: Sequence[str], template_set: str) -> np.ndarray:
        return model.text_encoder.encode(list(words), template_set).float().cpu().numpy()

    return embed


@functools.lru_cache(maxsize=64)
def axis_taps(size_out: int, size_in: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Bilinear taps along one axis, half-pixel centres, no antialias (as cv2.INTER_LINEAR and F.interpolate).

    Output index o reads source i0(o) and i1(o) = min(i0 + 1, in - 1) with weight lam(o) on i1. Returns
    (i0, i1 of each source index, lam, start, count, most): the output indices with i0 == i are
    start[i] .. start[i] + count[i] - 1, and ``most`` is the largest count. Cached, so CUDA-graph capture
    finds these tensors already on the device.
    """
    o = torch.arange(size_out, dtype=torch.float64)
    source = ((o + 0.5) * (size_in / size_out) - 0.5).clamp(min=0)
    i0 = source.floor().long().clamp(max=size_in - 1)
    lam = (source - i0).float()
    next_index = (torch.arange(size_in) + 1).clamp(max=size_in - 1)
    count = torch.bincount(i0, minlength=size_in)
    start = torch.cumsum(count, 0) - count
    return (i0.to(device), next_index.to(device), lam.to(device), start.to(device), count.to(device), int(count.max()))


@functools.lru_cache(maxsize=16)
def _first_taps(batch: int, size: tuple[int, int], grid: tuple[int, int], device: str) -> torch.Tensor:
    """Flat index into [B, h, w] of the first tap (i0, j0) of every output pixel of [B, H, W]."""
    y0, x0 = axis_taps(size[0], grid[0], device)[0], axis_taps(size[1], grid[1], device)[0]
    pixel = (y0[:, None] * grid[1] + x0[None, :]).reshape(1, -1)
    return (torch.arange(batch, device=y0.device)[:, None] * (grid[0] * grid[1]) + pixel).reshape(-1)


def postprocess_logits(
    logits: torch.Tensor, size: tuple[int, int], class_maps: bool = False, static_shapes: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """logits [B, K, h, w] -> labels [B, H, W] int32, confidence [B, H, W] float32 (, class maps [B, K, H, W]).

    The result of bilinear upsampling every map (half-pixel centres, as cv2.INTER_LINEAR), argmax over K and
    sigmoid of the best logit, computed winner first: a bilinear value is a convex blend of four source
    pixels with the same weights for every class, so where one class is the best at all four taps it is the
    best at every output pixel between them, and its blended logit is the blended best map. Only the output
    pixels of cells whose four taps disagree (class boundaries) are blended over all K. Ties go to the lower
    index, as in one argmax. Runs in float32 on the logits' device.

    ``class_maps`` (which needs every map at full size anyway) and ``static_shapes`` (CUDA-graph capture,
    where the data-dependent boundary cells cannot be selected) upsample all K maps instead, as does K = 1
    (its one map is the best map).
    """
    logits = logits.float()
    if class_maps or static_shapes or logits.shape[1] == 1:
        return _postprocess_dense(logits, size, class_maps)
    batch, classes, height, width = logits.shape
    device = str(logits.device)
    _, y_next, y_lam, y_start, y_count, rows = axis_taps(size[0], height, device)
    _, x_next, x_lam, x_start, x_count, cols = axis_taps(size[1], width, device)
    best, winner = logits.max(dim=1)  # [B, h, w]
    labels = winner.to(torch.int32).reshape(-1).take(_first_taps(batch, size, (height, width), device)).view(batch, *size)
    confidence = F.interpolate(best[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].contiguous()
    below, right = winner[:, y_next], winner[:, :, x_next]
    boundary = (winner != below) | (winner != right) | (winner != below[:, :, x_next])
    boundary &= (y_count > 0)[:, None] & (x_count > 0)[None, :]  # cells no output pixel falls in
    cells = boundary.nonzero()
    if len(cells) * rows * cols > DENSE_ABOVE * batch * size[0] * size[1]:  # boundaries everywhere: no gain
        return _postprocess_dense(logits, size, False)
    if len(cells):
        corners = logits.permute(0, 2, 3, 1)  # [B, h, w, K]: a tap's K logits in one gather
        step = max(1, POST_VALUES_PER_PASS // (rows * cols * classes))
        for first in range(0, len(cells), step):
            _blend_cells(corners, cells[first : first + step], size, labels, confidence,
                         (y_next, y_lam, y_start, y_count, rows), (x_next, x_lam, x_start, x_count, cols))
    return labels, torch.sigmoid(confidence), None


def _blend_cells(
    corners: torch.Tensor, cells: torch.Tensor, size: tuple[int, int], labels: torch.Tensor, confidence: torch.Tensor,
    y_taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
    x_taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int],
) -> None:
    """Write the blended argmax and max over K of every output pixel of ``cells`` [N, 3] (b, i, j)."""
    b, i, j = cells.unbind(1)
    i1, j1 = y_taps[0][i], x_taps[0][j]

    def span(index: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]) -> tuple[torch.Tensor, torch.Tensor]:
        # [N, most] output indices of each cell; a shorter cell repeats its last index, so the padding
        # computes the very value of that pixel again and writes it twice
        _, lam, start, count, most = taps
        step = torch.arange(most, device=index.device)
        at = start[index][:, None] + torch.minimum(step, count[index][:, None] - 1)
        return at, lam[at][..., None]  # and the weight of the second tap, [N, most, 1]

    rows, y_lam = span(i, y_taps)
    cols, x_lam = span(j, x_taps)
    top = torch.lerp(corners[b, i, j][:, None], corners[b, i, j1][:, None], x_lam)  # [N, C, K]
    bottom = torch.lerp(corners[b, i1, j][:, None], corners[b, i1, j1][:, None], x_lam)
    values = torch.lerp(top[:, None], bottom[:, None], y_lam[..., None])  # [N, R, C, K]
    best, index = values.max(dim=-1)
    target = (b[:, None, None] * size[0] + rows[:, :, None]) * size[1] + cols[:, None, :]
    labels.view(-1)[target] = index.to(torch.int32)
    confidence.view(-1)[target] = best


def _postprocess_dense(logits: torch.Tensor, size: tuple[int, int], class_maps: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every map upsampled, over K in passes of ``POST_CLASSES_PER_PASS`` (a later pass wins only when strictly better)."""
    labels: torch.Tensor | None = None
    confidence: torch.Tensor | None = None
    maps = []
    for offset in range(0, logits.shape[1], POST_CLASSES_PER_PASS):
        chunk = logits[:, offset : offset + POST_CLASSES_PER_PASS]
        if tuple(chunk.shape[-2:]) != tuple(size):
            # channels-last: the K values of a pixel are contiguous, for the resize and for the max over K
            chunk = F.interpolate(chunk.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False)
        best, index = chunk.max(dim=1)
        index = index.to(torch.int32) + offset
        if class_maps:
            maps.append(torch.sigmoid(chunk).contiguous())
        if labels is None or confidence is None:
            labels, confidence = index, best
        else:
            better = best > confidence
            labels, confidence = torch.where(better, index, labels), torch.where(better, best, confidence)
    assert labels is not None and confidence is not None  # K >= 1
    return labels, torch.sigmoid(confidence), (torch.cat(maps, dim=1) if class_maps else None)


class Runner(Protocol):
    """A callable prepared for one key of a ``GraphCache`` (on CUDA: a captured graph)."""

    def __call__(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor | None, ...]: ...


class GraphCache:
    """Runners by key, built on first use by ``capture(key, images, text)``, least recently used evicted.

    Keys are (kind, batch, H, W, K, output size, class maps): a captured CUDA graph is valid for exactly
    those shapes. ``max_entries`` bounds the GPU memory held by captured graphs.
    """

    def __init__(self, capture: Callable[[Hashable, torch.Tensor, torch.Tensor], Runner], max_entries: int = DEFAULT_MAX_GRAPHS) -> None:
        if max_entries < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_entries}")
        self.capture = capture
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Runner] = OrderedDict()
        self.captures = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def run(self, key: Hashable, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        runner = self._entries.get(key)
        if runner is None:
            runner = self.capture(key, images, text)
            self.captures += 1
            self._entries[key] = runner
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                log.info("dropped the CUDA graph for %s (max_graphs=%d)", evicted, self.max_entries)
        self._entries.move_to_end(key)
        return runner(images, text)


class CapturedGraph:
    """``function`` captured as a CUDA graph on static copies of its inputs; calls copy inputs in and replay."""

    def __init__(self, function: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, ...]], images: torch.Tensor, text: torch.Tensor) -> None:
        self.images, self.text = images.clone(), text.clone()
        with torch.cuda.device(images.device):  # capture on the model's GPU, not the process's current one
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    function(self.images, self.text)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = function(self.images, self.text)

    def __call__(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        self.images.copy_(images, non_blocking=True)
        self.text.copy_(text, non_blocking=True)
        self.graph.replay()
        return self.outputs


class TorchBackend(Backend):
    """Runs ``model`` with torch on ``device`` in ``precision`` (fp32; fp16 on CUDA; bf16).

    ``cuda_graphs``: None (default) = on when ``device`` is CUDA; True on the CPU is an error. Each new
    (batch, input size, K, output size) is captured once (a few eager runs, then capture) and replayed after;
    ``max_graphs`` of them are kept (least recently used dropped). ``compile``: run the model through
    ``torch.compile`` (needs a working inductor: Triton on the GPU, a C++ compiler on the CPU; the first call
    of each shape compiles for seconds to minutes).
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        cuda_graphs: bool | None = None,
        compile: bool = False,
        max_graphs: int = DEFAULT_MAX_GRAPHS,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 needs a GPU; use precision='fp32' (or 'bf16') on the CPU")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r}: PyTorch sees no CUDA GPU (CPU-only torch build or no driver); use device='cpu'")
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        elif cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, not {str(device)!r}; leave it unset (off on the CPU)")
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.cuda_graphs = bool(cuda_graphs)
        self.compiled = bool(compile)
        self.model = model.to(self.device).eval()
        self._forward: Callable[..., torch.Tensor] = torch.compile(self.model, dynamic=False) if compile else self.model
        self.graphs = GraphCache(self._capture, max_graphs)
        self._lock = threading.Lock()  # captured graphs own static buffers: one call at a time

    def _logits(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.precision != "fp32"):
            return self._forward(images, text)

    def _function(self, key: Hashable) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, ...]]:
        """The computation a key stands for: ('logits', ...) or ('predict', ..., output size, class maps)."""
        parts = cast(tuple[Any, ...], key)
        kind, size, class_maps = parts[0], parts[-2], parts[-1]
        if kind == "logits":
            def logits(images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
                out = self._logits(images, text).float()
                if tuple(out.shape[-2:]) != tuple(images.shape[-2:]):  # modules that answer on the patch grid
                    out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
                return (out,)
            return logits

        def predict(images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
            return postprocess_logits(self._logits(images, text), size, class_maps, static_shapes=self.cuda_graphs)
        return predict

    def _capture(self, key: Hashable, images: torch.Tensor, text: torch.Tensor) -> Runner:
        log.info("capturing a CUDA graph for %s", key)
        return CapturedGraph(self._function(key), images, text)

    def _run(self, key: tuple[Any, ...], pixels: np.ndarray, text: np.ndarray) -> tuple[torch.Tensor | None, ...]:
        images = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, non_blocking=True)
        embeddings = torch.from_numpy(np.ascontiguousarray(text)).to(self.device, non_blocking=True)
        if self.cuda_graphs:
            return self.graphs.run(key, images, embeddings)
        return self._function(key)(images, embeddings)

    @staticmethod
    def _key(kind: str, pixels: np.ndarray, text: np.ndarray, size: tuple[int, int] | None, class_maps: bool) -> tuple[Any, ...]:
        return (kind, *pixels.shape, text.shape[0], size, class_maps)

    @torch.inference_mode()
    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        with self._lock:
            (logits,) = self._run(self._key("logits", pixels, text, None, False), pixels, text)
            assert logits is not None
            return check_logits(logits.cpu().numpy(), self.name)

    @torch.inference_mode()
    def predict(self, pixels: np.ndarray, text: np.ndarray, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        size = check_size(size)
        with self._lock:
            labels, confidence, maps = self._run(self._key("predict", pixels, text, size, class_maps), pixels, text)
            assert labels is not None and confidence is not None
            prediction = Prediction(labels.cpu().numpy(), confidence.cpu().numpy(), maps.cpu().numpy() if maps is not None else None)
        return check_prediction(prediction, self.name)


BACKEND = TorchBackend
