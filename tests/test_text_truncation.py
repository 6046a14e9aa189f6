"""Prompts run through the text tower cut to the longest prompt of their batch, with unchanged embeddings."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synseg_core import create_model
from synseg_core.text.prompts import fill_templates

WORDS = ["door", "traffic light", "a very long compound category name of several words"]


@pytest.fixture(scope="module")
def vit_b_16_text_encoder():
    return create_model("vit-b-16", seed=0).text_encoder


@pytest.fixture(params=["tiny", "vit-b-16"])
def text_encoder(request, tiny_model, vit_b_16_text_encoder):
    return tiny_model.text_encoder if request.param == "tiny" else vit_b_16_text_encoder


def test_trimmed_tokens_end_after_the_longest_prompt(tiny_model):
    encoder = tiny_model.text_encoder
    tokens = encoder.tokenizer(["a door", "a photo of a small red door"])
    trimmed = encoder.trim_tokens(tokens)
    longest = int((tokens[1] != 0).nonzero().max()) + 1  # start, 7 words, end
    assert longest == 9 and trimmed.shape == (2, 9)
    assert torch.equal(trimmed, tokens[:, :9])


def test_text_tower_embeds_trimmed_tokens_as_full_length_ones(text_encoder):
    tokens = text_encoder.tokenizer([p for w in WORDS for p in fill_templates(w, "tcl")[:4]])
    trimmed = text_encoder.trim_tokens(tokens)
    assert trimmed.shape[1] < tokens.shape[1] == 77
    with torch.no_grad():
        torch.testing.assert_close(text_encoder(trimmed), text_encoder(tokens), atol=1e-5, rtol=1e-5)


def test_prompt_ensembles_run_the_tower_on_trimmed_tokens():
    encoder = create_model("tiny", seed=0).text_encoder  # its own: forward is replaced below
    lengths = []
    full = encoder.forward

    def recording(tokens):
        lengths.append(tokens.shape[1])
        return full(tokens)

    encoder.forward = recording
    embeddings = encoder.embed_prompts(WORDS, "tcl")
    assert lengths and max(lengths) < 77
    prompts = [p for w in WORDS for p in fill_templates(w, "tcl")]
    with torch.no_grad():
        per_prompt = F.normalize(full(encoder.tokenizer(prompts)), dim=-1)  # all 77 positions
    expected = F.normalize(per_prompt.reshape(len(WORDS), -1, per_prompt.shape[-1]).mean(dim=1), dim=-1)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)


def test_a_tower_without_causal_mask_is_not_trimmed():
    encoder = create_model("tiny", seed=0).text_encoder
    tokens = encoder.tokenizer(["a door"])
    encoder.attn_mask = None  # padding would then reach every token
    assert torch.equal(encoder.trim_tokens(tokens), tokens)


def test_more_tokens_than_the_context_length_are_refused(tiny_model):
    tokens = tiny_model.text_encoder.tokenizer(["a door"])
    with pytest.raises(ValueError, match="exceed the text tower's context length 77"):
        tiny_model.text_encoder(torch.cat([tokens, tokens[:, :3]], dim=1))
