"""PyTorch backend: the research model itself, on CPU or GPU, FP32 or FP16."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from synseg_core.model.synseg import SynSeg
from synseg_core.runtime.backend import Backend

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: SynSeg, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 needs a GPU; use precision='fp32' (or 'bf16') on the CPU")
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        embeddings = torch.from_numpy(np.ascontiguousarray(text)).to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.precision != "fp32"):
            logits = self.model(images, embeddings)
        return logits.float().cpu().numpy()


def from_checkpoint(
    directory: Path,
    model: SynSeg,
    device: str = "cpu",
    precision: str = "fp32",
    input_size: tuple[int, int] | int | None = None,
    engine_path: str | Path | None = None,
    onnx_dir: str | Path | None = None,
) -> TorchBackend:
    """The factory ``Segmenter.from_checkpoint`` calls; the model is already loaded from ``directory``.

    ``input_size`` is the Segmenter's (the model runs at any size). ``engine_path`` / ``onnx_dir`` name the
    files of the other backends: accepted empty, so that every backend takes the same options, and refused
    when given, since this backend would not use them.
    """
    for name, value in (("engine_path", engine_path), ("onnx_dir", onnx_dir)):
        if value:
            raise ValueError(f"{name}={str(value)!r} is for the onnxruntime and tensorrt backends; the torch backend "
                             "runs the checkpoint itself: leave it empty or choose one of those backends")
    return TorchBackend(model, device=device, precision=precision)
