"""Frozen CLIP image and text encoders (open_clip towers).

Both encoders are frozen by construction: their parameters never require
gradients and ``train()`` keeps them in eval mode, so a trainer cannot
accidentally fine-tune or put them into dropout mode.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from synseg_core.config import SynSegConfig
from synseg_core.text.prompts import EmbeddingCache, fill_templates


def create_clip(config: SynSegConfig) -> CLIP:
    """Build the (random-init) open_clip model named or described by ``config``."""
    if config.clip_config is not None:
        cfg = dict(config.clip_config)
        cfg["quick_gelu"] = config.quick_gelu or cfg.get("quick_gelu", False)
        return CLIP(**cfg)
    if config.clip_model not in open_clip.list_models():
        raise ValueError(
            f"unknown CLIP backbone {config.clip_model!r}; open_clip knows e.g. ViT-B-16, ViT-B-32, ViT-L-14 "
            "(see open_clip.list_models())"
        )
    model = open_clip.create_model(config.clip_model, pretrained=None, force_quick_gelu=config.quick_gelu)
    if not isinstance(model, CLIP):
        raise ValueError(f"backbone {config.clip_model!r} is not a plain CLIP ViT (got {type(model).__name__})")
    return model


def get_tokenizer(config: SynSegConfig) -> open_clip.tokenizer.SimpleTokenizer:
    if config.clip_config is not None:
        context = int(config.clip_config.get("text_cfg", {}).get("context_length", 77))
        return open_clip.tokenizer.SimpleTokenizer(context_length=context)
    return open_clip.get_tokenizer(config.clip_model)


class _Frozen(nn.Module):
    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


@dataclass
class ImageFeatures:
    """Activations of the extracted blocks, each [B, 1 + h*w, width] (CLS first), and the grid (h, w)."""

    activations: list[torch.Tensor]
    grid: tuple[int, int]


class ImageEncoder(_Frozen):
    """A frozen open_clip ViT returning the activations of selected blocks.

    Any input size that is a multiple of the patch size works: the positional
    embedding is bicubically resized to the patch grid (and cached per grid).
    """

    def __init__(self, visual: nn.Module, extract_layers: Sequence[int]) -> None:
        super().__init__()
        self.visual = visual
        self.extract_layers = tuple(extract_layers)
        depth = len(visual.transformer.resblocks)
        if max(self.extract_layers) >= depth:
            raise ValueError(f"extract_layers {self.extract_layers} exceed the encoder's {depth} blocks")
        self.patch_size = int(visual.patch_size[0])
        self.width = int(visual.conv1.out_channels)
        self._pos_cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}
        self.freeze()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._pos_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def positional_embedding(self, grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """[1 + h*w, width] positional embedding for a patch grid."""
        pos = self.visual.positional_embedding
        native = int(math.isqrt(pos.shape[0] - 1))
        if grid == (native, native):
            return pos.to(dtype)
        key = (*grid, device, dtype)
        if key not in self._pos_cache:
            cls_pos, patch_pos = pos[:1], pos[1:]
            patch_pos = patch_pos.reshape(1, native, native, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
            self._pos_cache[key] = torch.cat([cls_pos.float(), patch_pos]).to(device=device, dtype=dtype)
        return self._pos_cache[key]

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        """images [B, 3, H, W] (normalised) -> activations of ``extract_layers``."""
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        visual = self.visual
        x = visual.conv1(images)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid, x.device, x.dtype)
        x = visual.ln_pre(x)
        activations = []
        for index, block in enumerate(visual.transformer.resblocks[: max(self.extract_layers) + 1]):
            x = block(x)
            if index in self.extract_layers:
                activations.append(x)
        return ImageFeatures(activations=activations, grid=grid)


class TextEncoder(_Frozen):
    """The frozen open_clip text tower with its tokenizer and a prompt-ensemble embedding cache."""

    def __init__(
        self, clip: CLIP, tokenizer: open_clip.tokenizer.SimpleTokenizer, cache: EmbeddingCache, normalize: bool = True
    ) -> None:
        super().__init__()
        self.normalize = normalize  # False: CLIPSeg's conditioning, the mean of the raw text features
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.pool_type = clip.text_pool_type
        self.eos_id = getattr(clip, "text_eos_id", None)
        self.tokenizer = tokenizer
        self.cache = cache
        self._fingerprint: str | None = None
        self.freeze()

    @property
    def embed_dim(self) -> int:
        proj = self.text_projection
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._fingerprint = None
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def fingerprint(self) -> str:
        """A short hash of the tower's weights: the cache key that says 'this model'."""
        if self._fingerprint is None:
            digest = hashlib.sha256(b"normalized" if self.normalize else b"raw")
            for name, tensor in sorted(self.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes()[:4096])
                digest.update(str(float(tensor.float().sum())).encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, n] -> unnormalised text embeddings [N, D]; n <= the context length (see ``trim_tokens``)."""
        length, context = tokens.shape[1], self.positional_embedding.shape[0]
        if length > context:
            raise ValueError(f"{length} tokens per prompt exceed the text tower's context length {context}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = open_clip.model.text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def trim_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, context], zero-padded after each prompt -> [N, n]: cut after the longest prompt.

        Exact for a causal tower pooled at or before the end token (CLIP's): no position attends to a
        later one, so the padding never reaches the pooled token. Towers without a causal mask or
        pooled at the last position get their tokens unchanged.
        """
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos", "first"):
            return tokens
        length = int((tokens != 0).any(dim=0).nonzero().max()) + 1
        return tokens[:, :length]

    @torch.no_grad()
    def embed_prompts(self, words: Sequence[str], template_set: str, batch_size: int = 256) -> torch.Tensor:
        """Prompt-ensemble embeddings [K, D], computed without the cache.

        Normalised: each prompt's embedding L2-normalised, averaged, normalised again. Raw (``normalize=False``):
        the plain mean of the unnormalised embeddings, which for one template is CLIPSeg's text feature itself.
        """
        prompts = [p for w in words for p in fill_templates(w, template_set)]
        per_word = len(prompts) // len(words)
        device = self.token_embedding.weight.device
        chunks = []
        for start in range(0, len(prompts), batch_size):
            tokens = self.trim_tokens(self.tokenizer(prompts[start : start + batch_size])).to(device)
            features = self(tokens).float()
            chunks.append(F.normalize(features, dim=-1) if self.normalize else features)
        embeddings = torch.cat(chunks).reshape(len(words), per_word, -1).mean(dim=1)
        return F.normalize(embeddings, dim=-1) if self.normalize else embeddings

    def encode(self, words: Sequence[str], template_set: str) -> torch.Tensor:
        """Prompt-ensemble embeddings [K, D], L2-normalised unless ``normalize`` is off (cached per model, template set and word)."""
        embeddings = self.cache.get_or_compute(
            self.fingerprint, template_set, list(words), lambda missing: self.embed_prompts(missing, template_set)
        )
        return embeddings.to(self.token_embedding.weight.device)
