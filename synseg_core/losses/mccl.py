"""Multi-Category Contrastive Learning (MCCL): the paper's equations (3)-(7).

All four terms live within one image; a batch holds a different number of
categories per image, so everything is computed on padded [B, N, T] tensors with
a validity mask [B, N] and no Python loop over images:

    L_align = -1/N_I            sum_c      log sim(f_c, t_c)
    L_cont  = -1/N_I            sum_c      log(1 - sim(f_c, f̄_c))
    L_back  = -1/(N_I(N_I-1))   sum_{j!=k} log sim(f̄_j, f̄_k)
    L_sep   = -1/(N_I(N_I-1))   sum_{j!=k} log(1 - sim(f_j, f_k))

with sim the cosine similarity clipped to [0.005, 0.995]. Each term is averaged
over the images where it is defined (pair terms need N_I >= 2).

The clip keeps both logs finite. A hard clamp also zeroes the gradient outside
the range, and at initialisation every term sits there (S_c ~ 0.5 everywhere
makes f_c ~ f̄_c, so sim ~ 1; a random projector gives sim(f_c, t_c) < 0), so
nothing would ever train. By default the clip is therefore straight-through:
the loss value is exactly the paper's, the gradient is that of the unclipped
similarity. ``straight_through=False`` gives the hard clamp.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TERMS = ("align", "cont", "back", "sep")


@dataclass
class MCCLWeights:
    align: float = 1.0
    cont: float = 1.0
    back: float = 1.0
    sep: float = 1.0


def clip_similarity(sim: torch.Tensor, low: float, high: float, straight_through: bool = True) -> torch.Tensor:
    """Clip to [low, high] so log(s) and log(1 - s) stay finite; straight-through keeps the gradient of ``sim``."""
    clipped = sim.clamp(low, high)
    return sim + (clipped - sim).detach() if straight_through else clipped


def _pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """x [B, N, T] -> [B, N, N] cosine similarities."""
    unit = F.normalize(x, dim=-1, eps=1e-8)
    return unit @ unit.transpose(1, 2)


def _masked_image_mean(per_item: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each image's valid items, then over images that have any; [B, ...] + mask -> scalar."""
    dims = tuple(range(1, per_item.dim()))
    count = mask.sum(dim=dims)
    per_image = (per_item * mask).sum(dim=dims) / count.clamp(min=1)
    has_any = count > 0
    if not bool(has_any.any()):
        return per_item.sum() * 0.0  # keeps the graph (and device/dtype) when no image qualifies
    return per_image[has_any].mean()


def mccl_loss(
    foreground: torch.Tensor,
    background: torch.Tensor,
    text: torch.Tensor,
    mask: torch.Tensor,
    weights: MCCLWeights | None = None,
    clip: tuple[float, float] = (0.005, 0.995),
    straight_through: bool = True,
) -> dict[str, torch.Tensor]:
    """MCCL terms, weighted by λ1..λ4.

    foreground, background: synergy features f_c, f̄_c [B, N, T]; text: t_c [B, N, T];
    mask: [B, N] True where category n of image b is real (not padding).
    Returns ``{"loss_align", "loss_cont", "loss_back", "loss_sep"}`` (weighted) and the
    unweighted ``"sim_*"`` means for logging; the total is the sum of the ``loss_*`` terms.
    """
    weights = weights or MCCLWeights()
    low, high = clip
    mask = mask.bool()
    valid = mask.to(foreground.dtype)

    def clipped(sim: torch.Tensor) -> torch.Tensor:
        return clip_similarity(sim, low, high, straight_through)

    sim_align = clipped(F.cosine_similarity(foreground, text, dim=-1, eps=1e-8))  # [B, N]
    sim_cont = clipped(F.cosine_similarity(foreground, background, dim=-1, eps=1e-8))  # [B, N]
    align = _masked_image_mean(-torch.log(sim_align), valid)
    cont = _masked_image_mean(-torch.log1p(-sim_cont), valid)

    eye = torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    pair_mask = (mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye).to(foreground.dtype)  # [B, N, N], j != k
    sim_back = clipped(_pairwise_cosine(background))
    sim_sep = clipped(_pairwise_cosine(foreground))
    back = _masked_image_mean(-torch.log(sim_back), pair_mask)
    sep = _masked_image_mean(-torch.log1p(-sim_sep), pair_mask)

    with torch.no_grad():
        stats = {
            "sim_align": _masked_image_mean(sim_align, valid),
            "sim_cont": _masked_image_mean(sim_cont, valid),
            "sim_back": _masked_image_mean(sim_back, pair_mask),
            "sim_sep": _masked_image_mean(sim_sep, pair_mask),
        }
    return {
        "loss_align": weights.align * align,
        "loss_cont": weights.cont * cont,
        "loss_back": weights.back * back,
        "loss_sep": weights.sep * sep,
        **stats,
    }


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the terms whose names say 'loss'."""
    return sum(value for name, value in terms.items() if name.startswith("loss"))  # type: ignore[return-value]
