"""MaskCLIP (Zhou et al., ECCV 2022): training-free dense CLIP, as a module the torch backend runs.

The last ViT block's attention is replaced by its value path: each patch token
goes through ``ln_1``, the value projection and ``out_proj`` only (no query/key
mixing, no residual, no MLP), then ``ln_post`` and ``proj`` into the joint
image-text space. The cosine similarity of every patch with every class
embedding is the activation map on the patch grid; the torch backend upsamples
it like any model's logits, so MaskCLIP is scored and deployed by exactly the
code SynSeg is.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from synseg_core.model.encoders import ImageEncoder
from synseg_core.model.synseg import SynSeg
from synseg_core.runtime.segmenter import Segmenter


class MaskCLIP(nn.Module):
    """images [B, 3, H, W] + L2-normalised text [K, T] -> ``scale * (cosine - offset)`` [B, K, h, w] (patch grid).

    The scaling lets the shared sigmoid turn cosines into scores in [0, 1]; TCL blends raw CLIP maps the same
    way (sigmoid((s - 0.25) * 10)). The argmax over classes does not depend on it. Shares ``model``'s frozen
    CLIP towers (its decoder is unused); ``.config``, ``.patch_size`` and ``.text_encoder`` are the model's.
    """

    def __init__(self, model: SynSeg, scale: float = 10.0, offset: float = 0.25) -> None:
        super().__init__()
        visual = cast(VisionTransformer, model.image_encoder.visual)
        depth = len(visual.transformer.resblocks)
        if depth < 2:
            raise ValueError("MaskCLIP needs an image tower with at least 2 blocks")
        # Shares the tower's weights; stops one block early, the last block is applied below.
        self.trunk = ImageEncoder(visual, (depth - 2,))
        self.visual = visual
        self.text_encoder = model.text_encoder
        self.config = model.config
        self.patch_size = model.patch_size
        self.scale = scale
        self.offset = offset

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] (normalised) -> L2-normalised patch embeddings [B, T, h, w]."""
        features = self.trunk(images)
        tokens = features.activations[0][:, 1:]  # [B, h*w, width], CLS dropped
        last = cast(ResidualAttentionBlock, self.visual.transformer.resblocks[-1])
        width = tokens.shape[-1]
        value_weight = last.attn.in_proj_weight[2 * width :]
        value_bias = last.attn.in_proj_bias[2 * width :] if last.attn.in_proj_bias is not None else None
        values = F.linear(last.ln_1(tokens), value_weight, value_bias)
        embedded = self.visual.ln_post(last.ls_1(last.attn.out_proj(values))) @ self.visual.proj  # [B, h*w, T]
        height, width_grid = features.grid
        return F.normalize(embedded, dim=-1).transpose(1, 2).reshape(images.shape[0], -1, height, width_grid)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        cosine = torch.einsum("bthw,kt->bkhw", self.dense_features(images), text.to(images.dtype))
        return self.scale * (cosine - self.offset)


def maskclip_segmenter(model: SynSeg, device: str = "cpu", **kwargs: object) -> Segmenter:
    """A ``Segmenter`` running MaskCLIP on ``model``'s frozen CLIP towers, on the torch backend."""
    return Segmenter.from_model(MaskCLIP(model), device=device, **kwargs)  # type: ignore[arg-type]
