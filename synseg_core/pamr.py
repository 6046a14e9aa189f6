"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), as TCL applies it at test time.

Each iteration replaces a pixel's mask values by an affinity-weighted average of its
neighbours at several dilations. The affinity of a neighbour comes from image colour:
``softmax_neighbours(-mean_c |I_c(p) - I_c(q)| / (1e-8 + 0.1 * sigma_c(p)))``, where
``sigma_c(p)`` is the standard deviation of channel c over p's 3x3 windows at all
dilations (p counted once per window). Averaging only across similar colours pulls a blurry mask onto
the image's edges. Borders are handled by replicating edge pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TCL_DILATIONS = (1, 2, 4, 8, 12, 24)
TCL_ITERATIONS = 10
# The 8 neighbour directions of a 3x3 window, scaled by each dilation.
_DIRECTIONS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbours(x: torch.Tensor, dilations: Sequence[int]) -> list[torch.Tensor]:
    """The 8 neighbours at each dilation of every pixel: ``[B, C, H, W]`` -> list of ``[B, C, H, W]``."""
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    height, width = x.shape[-2:]
    return [padded[..., pad + dy * d: pad + dy * d + height, pad + dx * d: pad + dx * d + width]
            for d in dilations for dy, dx in _DIRECTIONS]


def pamr_affinity(image: torch.Tensor, dilations: Sequence[int] = TCL_DILATIONS) -> torch.Tensor:
    """Neighbour weights from image colour: ``[B, 3, H, W]`` -> ``[B, P, H, W]``, P = 8 * len(dilations),
    summing to 1 over P."""
    neighbours = _neighbours(image, dilations)
    # The spread of each 3x3 window (centre included), pooled over dilations, as in the reference code.
    sigma = torch.stack(neighbours + [image] * len(dilations), dim=2).std(dim=2)  # [B, C, H, W]
    logits = torch.stack([-(image - n).abs() for n in neighbours], dim=2) / (1e-8 + 0.1 * sigma.unsqueeze(2))
    return logits.mean(dim=1).softmax(dim=1)


def pamr(image: torch.Tensor, masks: torch.Tensor, iterations: int = TCL_ITERATIONS,
         dilations: Sequence[int] = TCL_DILATIONS) -> torch.Tensor:
    """Refine ``masks`` ``[B, K, h, w]`` (any scores, e.g. class probabilities) with ``image`` ``[B, 3, H, W]``.

    The masks are first resized bilinearly to the image size. Returns ``[B, K, H, W]``.
    The image may be normalised or not: the affinity divides by local colour spread.
    Memory stays O(K·H·W) because neighbours are summed one direction at a time.
    """
    if image.shape[0] != masks.shape[0]:
        raise ValueError(f"image batch {image.shape[0]} != mask batch {masks.shape[0]}")
    masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
    affinity = pamr_affinity(image.to(masks.dtype), dilations)  # [B, P, H, W]
    for _ in range(iterations):
        refined = torch.zeros_like(masks)
        for p, neighbour in enumerate(_neighbours(masks, dilations)):
            refined += affinity[:, p: p + 1] * neighbour
        masks = refined
    return masks


class PAMR(torch.nn.Module):
    """``pamr`` as a module (TCL's interface): ``PAMR()(image [B, 3, H, W], masks [B, K, h, w]) -> [B, K, H, W]``."""

    def __init__(self, iterations: int = TCL_ITERATIONS, dilations: Sequence[int] = TCL_DILATIONS):
        super().__init__()
        self.iterations = iterations
        self.dilations = tuple(dilations)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return pamr(image, masks, self.iterations, self.dilations)
