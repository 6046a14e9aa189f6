"""The CLIPSeg-style decoder that turns conditional visual features into activation maps."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synseg_core.model.film import FiLM

#: Tokens per feed-forward chunk on the CPU: the [chunk, ffn_dim] hidden activation (16 MB at width 2048)
#: stays in the last-level cache instead of streaming K * (1 + h*w) * ffn_dim floats through memory three
#: times (2.3x faster at K = 100). Smaller chunks are no faster and, with more thread barriers, slow down
#: badly when other processes compete for the cores.
FFN_CHUNK_TOKENS = 2048

_onnx_attention = {"contrib": False}  # set by onnx_runtime_attention()


@contextmanager
def onnx_runtime_attention() -> Iterator[None]:
    """Meanwhile, ONNX exports of the decoder's attention use ONNX Runtime's ``com.microsoft.MultiHeadAttention``.

    Its CPU kernel is flash attention; exported from ``F.scaled_dot_product_attention`` at opsets below 23,
    attention becomes MatMul + Softmax + MatMul, which materialise every [L, L] map. Same values, but the
    graph then runs in ONNX Runtime only (FP32; not TensorRT, not FP16 on the CPU), so it is opt-in.
    """
    previous = _onnx_attention["contrib"]
    _onnx_attention["contrib"] = True
    try:
        yield
    finally:
        _onnx_attention["contrib"] = previous


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # [B, K, H, W] activation-map logits A_c; S_c = sigmoid(A_c)
    conditional: torch.Tensor  # [B, K, D, h, w] FiLM output Z_c without CLS (the "conditional visual vector")
    visual: torch.Tensor  # [B, D, h, w] the same tokens just before FiLM: reduced visual features, text-free


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters, run by fused attention kernels.

    ``F.scaled_dot_product_attention`` never materialises the [L, L] attention map of a head in memory
    (flash attention on CPU and GPU); at head width 16 that map, not arithmetic, was the decoder's cost.
    Same parameter names, order and initialisation as ``nn.MultiheadAttention``, so CLIPSeg weights and
    older checkpoints load unchanged.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, C] -> [N, L, C]."""
        if _onnx_attention["contrib"] and torch.onnx.is_in_onnx_export():
            q, k, v = F.linear(x, self.in_proj_weight).chunk(3, dim=-1)  # the op adds the bias itself
            attended = torch.onnx.ops.symbolic(
                "com.microsoft::MultiHeadAttention", [q, k, v, self.in_proj_bias], {"num_heads": self.heads},
                dtype=x.dtype, shape=x.shape, version=1,
            )
            return self.out_proj(attended)
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # each [N, heads, L, C / heads]
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(attended.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """CLIPSeg's transformer layer: ``nn.TransformerEncoderLayer`` (post-norm, ReLU), same parameters and math."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        # Creation order = nn.TransformerEncoderLayer's: a seeded model draws the same initial weights.
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, C] -> [N, L, C]."""
        x = self.norm1(x + self.dropout1(self.self_attn(x)))
        return self.norm2(x + self.dropout2(self.feed_forward(x)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The position-wise FFN, x [..., C] -> [..., C], on token rows [n, C].

        Rows, because ONNX Runtime fuses a 2-D MatMul + bias + ReLU into one Gemm; eager on the CPU in
        chunks of rows, so the hidden activation stays in cache (same values).
        """
        rows = x.reshape(-1, x.shape[-1])
        traced = torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if x.device.type != "cpu" or traced:  # GPUs and graphs gain nothing from a loop of small matmuls
            return self._feed_forward(rows).view_as(x)
        return torch.cat([self._feed_forward(chunk) for chunk in rows.split(FFN_CHUNK_TOKENS)]).view_as(x)

    def _feed_forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(rows))))


class PatchHead(nn.ConvTranspose2d):
    """CLIPSeg's rd64-uni head: a transposed convolution with kernel = stride = patch size.

    Such a convolution maps each patch token linearly to its own p x p pixels, so it is computed as one
    matmul on the tokens (several times faster on the CPU than the convolution); the parameters are the
    convolution's.
    """

    def __init__(self, channels: int, patch_size: int) -> None:
        super().__init__(channels, 1, patch_size, stride=patch_size)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        """tokens [N, h*w, C] (patches row by row) -> logits [N, h*p, w*p]."""
        patch = self.kernel_size[0]
        bias = self.bias.expand(patch * patch) if self.bias is not None else None
        pixels = F.linear(tokens, self.weight.flatten(1).T, bias)  # [N, h*w, p*p]
        pixels = pixels.unflatten(1, grid).unflatten(-1, (patch, patch)).transpose(2, 3)  # [N, h, p, w, p]
        return pixels.reshape(-1, grid[0] * patch, grid[1] * patch)


class RefinedHead(nn.Sequential):
    """CLIPSeg's "refined" head: finer masks from two 4x transposed-convolution upsamplings."""

    def __init__(self, channels: int, patch_size: int) -> None:
        step = patch_size // 4
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels // 2, step, stride=step),
            nn.ReLU(),
            nn.ConvTranspose2d(channels // 2, 1, step, stride=step),
        )

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        """tokens [N, h*w, C] (patches row by row) -> logits [N, h*p, w*p]."""
        return super().forward(tokens.transpose(1, 2).unflatten(-1, grid))[:, 0]


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
        self.layers = nn.ModuleList(DecoderLayer(reduce_dim, heads, ffn_dim, dropout) for _ in range(num_blocks))
        self.head: PatchHead | RefinedHead = RefinedHead(reduce_dim, patch_size) if refined_head else PatchHead(reduce_dim, patch_size)

    def forward(self, activations: Sequence[torch.Tensor], grid: tuple[int, int], text: torch.Tensor) -> DecoderOutput:
        """activations: per block [B, 1+h*w, width] in encoder order; text [B, K, T] -> maps for all K at once.

        The state is [B, K', 1+h*w, D]: until FiLM it does not depend on the text, so it is computed once
        per image (K' = 1) and broadcast over the K categories; after FiLM K' = K.
        """
        batch, num_classes = text.shape[:2]
        state: torch.Tensor | None = None
        conditional: torch.Tensor | None = None
        visual: torch.Tensor | None = None
        for index, (activation, reduce, layer) in enumerate(zip(reversed(activations), self.reduces, self.layers, strict=True)):
            reduced = reduce(activation).unsqueeze(1)  # per image, broadcast over the categories
            state = reduced if state is None else state + reduced
            if index == self.cond_layer:
                visual = state[:, 0]
                state = conditional = self.film(state, text)
            state = layer(state.flatten(0, 1)).unflatten(0, (batch, -1))
        assert state is not None and conditional is not None and visual is not None
        logits = self.head(state[:, :, 1:].flatten(0, 1), grid).unflatten(0, (batch, num_classes))
        conditional = conditional[:, :, 1:].transpose(-1, -2).unflatten(-1, grid)
        visual = visual[:, 1:].transpose(-1, -2).unflatten(-1, grid)
        return DecoderOutput(logits=logits, conditional=conditional, visual=visual)
