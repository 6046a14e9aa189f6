"""The model's parts as exportable graphs: what ``synseg_core.export`` hands to ``torch.onnx.export``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synseg_core.model.encoders import ImageFeatures, TextEncoder
from synseg_core.model.synseg import SynSeg


class ImageEncoderGraph(nn.Module):
    """pixels [B, 3, H, W] -> activations of the extracted blocks, each [B, 1 + h*w, width]."""

    def __init__(self, model: SynSeg) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(pixels).activations)


class DecoderGraph(nn.Module):
    """(act0, ..., act{n-1}, text [K, T]) -> logits [B, K, H, W]: FiLM + decoder for one patch grid."""

    def __init__(self, model: SynSeg, grid: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.grid = grid

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *activations, text = inputs
        return self.model.decode(ImageFeatures(list(activations), self.grid), text).logits


class TextEncoderGraph(nn.Module):
    """tokens [K, P, C] (P prompt templates per word) -> prompt-ensemble embeddings [K, T].

    The same ensemble as ``TextEncoder.embed_prompts``: normalise each prompt, average over P, normalise;
    or, for a raw-conditioned model (CLIPSeg), the plain mean of the unnormalised embeddings.
    """

    def __init__(self, text_encoder: TextEncoder) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        classes, prompts, context = tokens.shape
        embeddings = self.text_encoder(tokens.reshape(-1, context)).float()
        if not self.text_encoder.normalize:
            return embeddings.reshape(classes, prompts, -1).mean(dim=1)
        embeddings = F.normalize(embeddings, dim=-1)
        return F.normalize(embeddings.reshape(classes, prompts, -1).mean(dim=1), dim=-1)
