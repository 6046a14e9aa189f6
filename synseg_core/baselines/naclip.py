"""NACLIP and ClearCLIP: training-free dense CLIP by changing only the last ViT block.

Both drop the last block's residual connection and feed-forward network, so a patch's output is the
attention output alone, then ``ln_post`` and ``proj`` into the joint image-text space; the cosine of
every patch with every class embedding is the activation map. They differ in the attention logits:

- NACLIP (Hajimiri et al., WACV 2025): key-key similarity plus a Gaussian neighbourhood prior,
  ``softmax(k_i·k_j / sqrt(d) + exp(-|p_i - p_j|² / (2σ²)))`` with σ = 5 patches between patch tokens
  (0 where CLS is involved), so each patch attends to similar and nearby patches.
- ClearCLIP (Lan et al., ECCV 2024): query-query similarity, ``softmax(q_i·q_j / sqrt(d))``.

``TrainingFreeCLIP`` is an ``nn.Module`` with ``forward(images, text) -> logits``, ``.config`` and
``.patch_size``, so the torch backend, ``Segmenter``, ``evaluate`` and the ROS node run it like SynSeg.
Its state dict holds only the two CLIP towers, under SynSeg's key names.
"""
from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from synseg_core.config import OPENAI_MEAN, OPENAI_STD, SynSegConfig
from synseg_core.model.encoders import ImageEncoder, TextEncoder, create_clip, get_tokenizer
from synseg_core.model.synseg import DEFAULT_CACHE

ATTENTIONS = ("naclip", "clearclip")
NACLIP_STD = 5.0  # the Gaussian's standard deviation in patches (NACLIP's default)


def neighbourhood_prior(grid: tuple[int, int], std: float, prefix: int = 1) -> torch.Tensor:
    """[prefix + h*w, prefix + h*w] additive attention prior: exp(-squared patch distance / (2 std²)), 0 for CLS."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    positions = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
    prior = torch.exp(-torch.cdist(positions, positions).square() / (2.0 * std**2))
    return F.pad(prior, (prefix, 0, prefix, 0))


def last_block_attention(
    block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int], method: str, std: float = NACLIP_STD
) -> torch.Tensor:
    """The modified last block: x [B, 1+h*w, width] -> attention output [B, 1+h*w, width] (no residual, no FFN)."""
    attn = block.attn
    heads, width = attn.num_heads, x.shape[-1]
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (heads, width // heads)).transpose(1, 2) for t in (q, k, v))  # [B, heads, N, d]
    if method == "naclip":
        bias = neighbourhood_prior(grid, std).to(x.device, x.dtype)
        out = F.scaled_dot_product_attention(k, k, v, attn_mask=bias)
    else:
        out = F.scaled_dot_product_attention(q, q, v)
    return block.ls_1(attn.out_proj(out.transpose(1, 2).flatten(2)))


class TrainingFreeCLIP(nn.Module):
    """NACLIP or ClearCLIP (``config.method``) on frozen CLIP towers; no trainable parameters.

    Shapes: images [B, 3, H, W] (normalised), text [K, T] L2-normalised -> logits [B, K, H, W] =
    ``scale * (cosine - offset)``, bilinearly upsampled, so the shared sigmoid gives scores in [0, 1]
    (the MaskCLIP baseline's convention); the argmax over classes does not depend on scale or offset.
    """

    def __init__(self, config: SynSegConfig, scale: float = 10.0, offset: float = 0.25, std: float = NACLIP_STD) -> None:
        super().__init__()
        if config.method not in ATTENTIONS:
            raise ValueError(f"TrainingFreeCLIP runs method {ATTENTIONS}, not {config.method!r}")
        self.config = config
        clip = create_clip(config)
        visual = cast(VisionTransformer, clip.visual)
        depth = len(visual.transformer.resblocks)
        if depth < 2:
            raise ValueError("NACLIP/ClearCLIP need an image tower with at least 2 blocks")
        # Runs the blocks before the last one; ``visual`` (all blocks) stays its submodule, so the keys match SynSeg's.
        self.image_encoder = ImageEncoder(visual, (depth - 2,))
        self.text_encoder = TextEncoder(clip, get_tokenizer(config), DEFAULT_CACHE, config.text_embedding == "normalized")
        self.scale, self.offset, self.std = scale, offset, std

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

    @property
    def text_dim(self) -> int:
        return self.text_encoder.embed_dim

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> L2-normalised patch embeddings [B, T, h, w] in the joint space."""
        features = self.image_encoder(images)
        visual = self.image_encoder.visual
        last = cast(ResidualAttentionBlock, visual.transformer.resblocks[-1])
        tokens = last_block_attention(last, features.activations[0], features.grid, self.config.method, self.std)[:, 1:]
        embedded = visual.ln_post(tokens) @ visual.proj
        height, width = features.grid
        return F.normalize(embedded, dim=-1).transpose(1, 2).reshape(images.shape[0], -1, height, width)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        cosine = torch.einsum("bthw,kt->bkhw", self.dense_features(images), F.normalize(text.to(images.dtype), dim=-1))
        cosine = F.interpolate(cosine, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return self.scale * (cosine - self.offset)


def training_free_config(config: SynSegConfig, method: str) -> SynSegConfig:
    """A config for ``method`` on ``config``'s CLIP: CLIP's mean/std and the 80 ImageNet templates, as NACLIP and ClearCLIP use."""
    if method not in ATTENTIONS:
        raise ValueError(f"unknown training-free method {method!r}; choose one of {ATTENTIONS}")
    data = {**config.to_dict(), "method": method, "prompt_set": "imagenet80", "text_embedding": "normalized",
            "mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_antialias": False}
    return SynSegConfig.from_dict(data)


def from_towers(model: nn.Module, method: str) -> TrainingFreeCLIP:
    """NACLIP/ClearCLIP on the CLIP towers of an existing model (a SynSeg checkpoint's, for example)."""
    rival = TrainingFreeCLIP(training_free_config(model.config, method))
    towers = {k: v for k, v in model.state_dict().items() if k.startswith(("image_encoder.", "text_encoder."))}
    rival.load_state_dict(towers)
    return rival.to(next(model.parameters()).device).eval()

