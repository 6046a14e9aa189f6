"""MaskCLIP (Zhou et al., ECCV 2022): training-free dense CLIP, as an inference ``Backend``.

The last ViT block's attention is replaced by its value path: each patch token
goes through ``ln_1``, the value projection and ``out_proj`` only (no query/key
mixing, no residual, no MLP), then ``ln_post`` and ``proj`` into the joint
image-text space. The cosine similarity of every patch with every class
embedding, bilinearly upsampled, is the activation map. Being a ``Backend``,
it is scored by exactly the evaluation code SynSeg is scored by.
"""
from __future__ import annotations

from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from synseg_core.model.encoders import ImageEncoder
from synseg_core.model.synseg import SynSeg
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.segmenter import Segmenter, torch_text_embedder


class MaskCLIPBackend(Backend):
    """Patch-text cosine maps from a (frozen) CLIP image tower.

    ``infer`` returns ``scale * (cosine - offset)`` so that the shared sigmoid
    turns cosines into scores in [0, 1]; TCL blends raw CLIP maps the same way
    (sigmoid((s - 0.25) * 10)). The argmax over classes does not depend on them.
    """

    name = "maskclip"

    def __init__(self, model: SynSeg, scale: float = 10.0, offset: float = 0.25, device: str | torch.device = "cpu") -> None:
        visual = cast(VisionTransformer, model.image_encoder.visual)
        depth = len(visual.transformer.resblocks)
        if depth < 2:
            raise ValueError("MaskCLIP needs an image tower with at least 2 blocks")
        # Shares the tower's weights; stops one block early, the last block is applied below.
        self.trunk = ImageEncoder(visual, (depth - 2,)).to(device)
        self.visual = visual
        self.device = torch.device(device)
        self.scale = scale
        self.offset = offset

    @torch.inference_mode()
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

    @torch.inference_mode()
    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        """[B, 3, H, W] + L2-normalised [K, T] -> scaled cosine maps [B, K, H, W]."""
        images = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        embeddings = torch.from_numpy(np.ascontiguousarray(text)).to(self.device)
        cosine = torch.einsum("bthw,kt->bkhw", self.dense_features(images), embeddings)
        cosine = F.interpolate(cosine, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return (self.scale * (cosine - self.offset)).float().cpu().numpy()


def maskclip_segmenter(model: SynSeg, device: str = "cpu", **kwargs: object) -> Segmenter:
    """A ``Segmenter`` running MaskCLIP on ``model``'s frozen CLIP towers (its decoder is unused)."""
    backend = MaskCLIPBackend(model, device=device)
    return Segmenter(backend, torch_text_embedder(model), model.config, patch_size=model.patch_size, **kwargs)  # type: ignore[arg-type]
