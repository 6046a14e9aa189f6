"""Feature Synergy Structure (FSS): foreground/background synergy features per category.

Training-only. The conditional visual features Z_c are projected to the text
embedding dimension by a convolutional projector (P_c), and the activation map
S_c, averaged down to the patch grid (s_c), weights them:

    f_c  = s_c^T P_c / (h w)          foreground synergy feature
    f̄_c  = (1 - s_c)^T P_c / (h w)    background synergy feature

The 1/(h w) factor does not change any cosine similarity; it keeps magnitudes
independent of the input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Conv projector D -> text dim: one 1x1 conv, or 3x3 conv + ReLU + 1x1 conv when ``hidden`` > 0."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
            )
        else:
            self.net = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D, h, w] -> [N, T, h, w]."""
        return self.net(x)


@dataclass
class SynergyFeatures:
    foreground: torch.Tensor  # [B, K, T]  f_c
    background: torch.Tensor  # [B, K, T]  f̄_c


def synergy_features(projector: Projector, conditional: torch.Tensor, logits: torch.Tensor) -> SynergyFeatures:
    """conditional [B, K, D, h, w], logits [B, K, H, W] -> synergy features [B, K, T] each."""
    batch, num_classes, channels, height, width = conditional.shape
    projected = projector(conditional.reshape(batch * num_classes, channels, height, width))
    projected = projected.reshape(batch, num_classes, -1, height * width)  # P_c  [B, K, T, h*w]
    maps = torch.sigmoid(logits)  # S_c at input resolution
    # Area averaging onto the patch grid: exact because H = h * patch.
    small = F.adaptive_avg_pool2d(maps, (height, width)).reshape(batch, num_classes, 1, height * width)
    area = float(height * width)
    foreground = (projected * small).sum(-1) / area
    background = (projected * (1.0 - small)).sum(-1) / area
    return SynergyFeatures(foreground=foreground, background=background)
