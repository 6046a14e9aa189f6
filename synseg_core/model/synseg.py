"""The assembled SynSeg model: frozen CLIP encoders + FiLM + decoder (+ FSS projector for training)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from synseg_core.config import SynSegConfig, get_config
from synseg_core.model.decoder import Decoder, DecoderOutput
from synseg_core.model.encoders import ImageEncoder, ImageFeatures, TextEncoder, create_clip, get_tokenizer
from synseg_core.model.fss import Projector, SynergyFeatures, synergy_features
from synseg_core.text.prompts import EmbeddingCache

DEFAULT_CACHE = EmbeddingCache()


class SynSeg(nn.Module):
    """SynSeg: one image-encoder pass per image, one batched decoder pass for all K categories.

    Shapes: images [B, 3, H, W]; text embeddings [K, T] (shared by the batch) or
    [B, K, T]; logits / activation maps [B, K, H, W].
    """

    def __init__(self, config: SynSegConfig, cache: EmbeddingCache | None = None) -> None:
        super().__init__()
        self.config = config
        clip = create_clip(config)
        self.image_encoder = ImageEncoder(clip.visual, config.extract_layers)
        self.text_encoder = TextEncoder(clip, get_tokenizer(config), cache or DEFAULT_CACHE, config.text_embedding == "normalized")
        text_dim = self.text_encoder.embed_dim
        self.decoder = Decoder(
            vision_width=self.image_encoder.width,
            text_dim=text_dim,
            patch_size=self.image_encoder.patch_size,
            num_blocks=len(config.extract_layers),
            reduce_dim=config.reduce_dim,
            heads=config.decoder_heads,
            ffn_dim=config.decoder_ffn_dim,
            dropout=config.decoder_dropout,
            cond_layer=config.cond_layer,
            refined_head=config.refined_head,
        )
        self.projector = Projector(config.reduce_dim, text_dim, config.projector_hidden)

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

    @property
    def text_dim(self) -> int:
        return self.text_encoder.embed_dim

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """FiLM, decoder and projector: everything but the frozen CLIP towers."""
        yield from self.decoder.parameters()
        yield from self.projector.parameters()

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        return self.image_encoder(images)

    def encode_text(self, words: Sequence[str], template_set: str | None = None) -> torch.Tensor:
        """Prompt-ensemble embeddings [K, T] as ``config.text_embedding`` says (normalised or raw), cached."""
        return self.text_encoder.encode(words, template_set or self.config.prompt_set)

    def decode(self, features: ImageFeatures, text: torch.Tensor) -> DecoderOutput:
        batch = features.activations[0].shape[0]
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(batch, -1, -1)
        if text.dim() != 3 or text.shape[0] != batch or text.shape[-1] != self.text_dim:
            raise ValueError(f"text embeddings must be [K, {self.text_dim}] or [{batch}, K, {self.text_dim}], got {tuple(text.shape)}")
        return self.decoder(features.activations, features.grid, text * self.config.cond_scale)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Inference path: images [B, 3, H, W], text [K, T] or [B, K, T] -> logits A_c [B, K, H, W]."""
        return self.decode(self.encode_image(images), text).logits

    def synergy(self, output: DecoderOutput) -> SynergyFeatures:
        """FSS synergy features of a decoder output (training only).

        ``fss_source="conditional"`` projects the FiLM output Z_c (the paper's wording);
        ``"visual"`` projects the text-free features before FiLM, so a category can change its
        synergy features only through where its activation map S_c puts weight.
        """
        if self.config.fss_source == "visual":
            features = output.visual.unsqueeze(1).expand(-1, output.logits.shape[1], -1, -1, -1)
        else:
            features = output.conditional
        return synergy_features(self.projector, features, output.logits)


def create_model(config: str | SynSegConfig | dict = "vit-b-16", seed: int | None = None, **overrides: object) -> SynSeg:
    """A random-init SynSeg from a preset name (see ``list_presets()``), a config or a dict; ``overrides`` replace fields."""
    resolved = get_config(config)
    if overrides:
        resolved = SynSegConfig.from_dict({**resolved.to_dict(), **overrides})
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SynSeg(resolved)
    else:
        model = SynSeg(resolved)
    return model.eval()
