"""FiLM: text embedding -> per-channel scale and shift of the visual features."""
from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    """``x * film_mul(t) + film_add(t)`` with one linear map each (CLIPSeg's layout, so its weights load)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.film_mul = nn.Linear(text_dim, channels)
        self.film_add = nn.Linear(text_dim, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x [..., L, C], text [..., T] -> conditional visual features [..., L, C].

        The leading axes broadcast: x [B, 1, L, C] with text [B, K, T] modulates one image for K categories.
        """
        return x * self.film_mul(text).unsqueeze(-2) + self.film_add(text).unsqueeze(-2)
