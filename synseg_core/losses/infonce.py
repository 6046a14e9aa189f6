"""Single-category contrastive baseline: caption-level InfoNCE on mask-pooled features (TCL/GroupViT-style).

The benchmark's baseline (b). Each image is decoded with ONE "category", its
whole caption; the foreground synergy feature f_i (the projected conditional
features pooled by the activation map) is classified among all captions of the
global batch:

    L = -1/B sum_i log( exp(cos(f_i, t_i) / tau) / sum_j exp(cos(f_i, t_j) / tau) )

Only the image -> caption direction is used: the captions come from the frozen
text tower, so under data parallelism the other ranks' captions are gathered as
constants (the symmetric form would need every rank's image features with their
gradients). ``tau`` is fixed (default 0.07, CLIP's initial
value) so the baseline has no parameter outside the model. No background or
pair terms: that is the difference MCCL is measured against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def single_infonce_loss(
    foreground: torch.Tensor,
    captions: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    temperature: float = 0.07,
) -> dict[str, torch.Tensor]:
    """foreground f_i [B, T]; captions t_j [M, T] (M >= B, the batch's captions, possibly from all ranks);
    targets [B]: index of image i's own caption in ``captions``; valid [M]: False for padding rows.

    Returns ``loss_infonce`` (mean cross-entropy over the B images) and, for logging,
    ``sim_positive`` (mean cosine to the own caption) and ``acc_infonce`` (top-1 caption retrieval).
    """
    logits = F.normalize(foreground, dim=-1) @ F.normalize(captions, dim=-1).t() / temperature  # [B, M]
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(0), float("-inf"))
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        positive = logits.gather(1, targets.unsqueeze(1)).squeeze(1) * temperature
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return {"loss_infonce": loss, "sim_positive": positive.mean(), "acc_infonce": accuracy}
