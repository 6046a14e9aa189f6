"""The CLIPSeg-style decoder that turns conditional visual features into activation maps."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from synseg_core.model.film import FiLM


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # [B, K, H, W] activation-map logits A_c; S_c = sigmoid(A_c)
    conditional: torch.Tensor  # [B, K, D, h, w] FiLM output Z_c without CLS (the "conditional visual vector")
    visual: torch.Tensor  # [B, D, h, w] the same tokens just before FiLM: reduced visual features, text-free


class Decoder(nn.Module):
    """Reduce each extracted block to D channels, FiLM at ``cond_layer``, one transformer layer per block.

    Blocks are visited deepest first (9 -> 7 -> 3 for ViT-B/16); each visit adds
    the reduced activation to the running state (a skip connection) before its
    transformer layer. A transposed convolution with kernel = stride = patch size
    maps the patch grid back to input resolution. ``reduces[i]`` and ``layers[i]``
    belong to the i-th block in that deepest-first order, as in CLIPSeg.
    """

    def __init__(
        self,
        vision_width: int,
        text_dim: int,
        patch_size: int,
        num_blocks: int,
        reduce_dim: int = 64,
        heads: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        cond_layer: int = 0,
        refined_head: bool = False,
    ) -> None:
        super().__init__()
        self.cond_layer = cond_layer
        self.patch_size = patch_size
        self.reduces = nn.ModuleList(nn.Linear(vision_width, reduce_dim) for _ in range(num_blocks))
        self.film = FiLM(text_dim, reduce_dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(reduce_dim, heads, ffn_dim, dropout=dropout, batch_first=True)
            for _ in range(num_blocks)
        )
        self.head: nn.Module
        if refined_head:  # CLIPSeg's "refined" head: finer masks from two 4x upsamplings
            step = patch_size // 4
            self.head = nn.Sequential(
                nn.Conv2d(reduce_dim, reduce_dim, 3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim, reduce_dim // 2, step, stride=step),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim // 2, 1, step, stride=step),
            )
        else:
            self.head = nn.ConvTranspose2d(reduce_dim, 1, patch_size, stride=patch_size)

    def forward(self, activations: Sequence[torch.Tensor], grid: tuple[int, int], text: torch.Tensor) -> DecoderOutput:
        """activations: per block [B, 1+h*w, width] in encoder order; text [B, K, T] -> maps for all K at once."""
        batch, num_classes = text.shape[:2]
        cond = text.reshape(batch * num_classes, -1)
        state: torch.Tensor | None = None
        conditional: torch.Tensor | None = None
        visual: torch.Tensor | None = None
        for index, (activation, reduce, layer) in enumerate(zip(reversed(activations), self.reduces, self.layers, strict=True)):
            # The reduction is per image; broadcasting it over the K categories avoids K identical matmuls.
            reduced = reduce(activation)
            reduced = reduced.unsqueeze(1).expand(-1, num_classes, -1, -1).reshape(batch * num_classes, *reduced.shape[1:])
            state = reduced if state is None else reduced + state
            if index == self.cond_layer:
                visual = state.reshape(batch, num_classes, *state.shape[1:])[:, 0]  # text-free, same for every k
                state = self.film(state, cond)
                conditional = state
            state = layer(state)
        assert state is not None and conditional is not None and visual is not None
        height, width = grid
        tokens = state[:, 1:].transpose(1, 2).reshape(batch * num_classes, -1, height, width)
        logits = self.head(tokens).reshape(batch, num_classes, height * self.patch_size, width * self.patch_size)
        conditional = conditional[:, 1:].transpose(1, 2).reshape(batch, num_classes, -1, height, width)
        visual = visual[:, 1:].transpose(1, 2).reshape(batch, -1, height, width)
        return DecoderOutput(logits=logits, conditional=conditional, visual=visual)
