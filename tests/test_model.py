"""The SynSeg network: frozen encoders, any input size, one batched decoder pass, FSS."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synseg_core import create_model
from synseg_core.config import SynSegConfig, get_config
from synseg_core.model.fss import synergy_features


def test_full_size_model_matches_the_paper_parameter_count():
    model = create_model("vit-b-16")
    total = sum(p.numel() for p in model.parameters())
    assert 150.5e6 < total < 151.0e6  # paper Table 1: 151M
    assert model.text_dim == 512 and model.image_encoder.width == 768
    assert model.config.extract_layers == (3, 7, 9)


def test_encoders_are_frozen_by_construction(tiny_model):
    model = create_model("tiny", seed=0)
    model.train()
    assert not model.image_encoder.training and not model.text_encoder.training
    assert model.decoder.training
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    frozen = {id(p) for p in model.image_encoder.parameters()} | {id(p) for p in model.text_encoder.parameters()}
    assert trainable.isdisjoint(frozen)
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}


def test_image_encoder_returns_cls_plus_patch_tokens_of_the_chosen_blocks(tiny_model):
    features = tiny_model.encode_image(torch.randn(2, 3, 64, 96))
    assert features.grid == (4, 6)
    assert len(features.activations) == 3
    assert all(a.shape == (2, 1 + 4 * 6, 96) for a in features.activations)


def test_extracted_activations_are_the_outputs_of_the_named_blocks(tiny_model):
    visual = tiny_model.image_encoder.visual
    x = torch.randn(1, 3, 64, 64)
    tokens = visual._embeds(x)
    outputs = []
    for block in visual.transformer.resblocks:
        tokens = block(tokens)
        outputs.append(tokens)
    features = tiny_model.encode_image(x)
    for layer, activation in zip(tiny_model.config.extract_layers, features.activations, strict=True):
        torch.testing.assert_close(activation, outputs[layer])


def test_native_size_uses_the_positional_embedding_unchanged(tiny_model):
    pos = tiny_model.image_encoder.positional_embedding((4, 4), torch.device("cpu"), torch.float32)
    assert torch.equal(pos, tiny_model.image_encoder.visual.positional_embedding)


def test_positional_embedding_is_interpolated_for_other_grids(tiny_model):
    pos = tiny_model.image_encoder.positional_embedding((8, 6), torch.device("cpu"), torch.float32)
    assert pos.shape == (1 + 48, 96)
    assert torch.equal(pos[0], tiny_model.image_encoder.visual.positional_embedding[0])  # CLS untouched


@pytest.mark.parametrize("grid", [(8, 6), (3, 2)], ids=["upsampled", "downsampled"])
def test_interpolated_positional_embedding_is_the_bicubic_resampling_of_the_patch_grid(tiny_model, grid):
    native = tiny_model.image_encoder.visual.positional_embedding  # [1 + 4*4, 96]: CLS, then patches row by row
    image = native[1:].T.reshape(1, 96, 4, 4)  # channels-first view of the 4x4 patch grid
    expected = F.interpolate(image, size=grid, mode="bicubic", align_corners=False).reshape(96, -1).T
    pos = tiny_model.image_encoder.positional_embedding(grid, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(pos[1:], expected)
    assert not torch.allclose(expected, F.interpolate(image, size=grid, mode="bilinear", align_corners=False).reshape(96, -1).T)


def test_input_size_not_a_multiple_of_the_patch_is_refused(tiny_model):
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        tiny_model.encode_image(torch.randn(1, 3, 64, 70))


def test_decoder_output_covers_the_input_resolution_for_every_category(tiny_model):
    text = tiny_model.encode_text(["dog", "cat", "tree", "road", "sky"])
    out = tiny_model.decode(tiny_model.encode_image(torch.randn(2, 3, 48, 80)), text)
    assert out.logits.shape == (2, 5, 48, 80)
    assert out.conditional.shape == (2, 5, 16, 3, 5)


def test_batched_decoding_equals_decoding_each_category_alone(tiny_model):
    images = torch.randn(2, 3, 64, 64)
    text = tiny_model.encode_text(["door", "chair", "floor"])
    with torch.no_grad():
        features = tiny_model.encode_image(images)
        together = tiny_model.decode(features, text).logits
        alone = torch.cat([tiny_model.decode(features, text[k : k + 1]).logits for k in range(3)], dim=1)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_per_image_text_embeddings_are_accepted(tiny_model):
    text = torch.nn.functional.normalize(torch.randn(2, 4, tiny_model.text_dim), dim=-1)
    logits = tiny_model(torch.randn(2, 3, 64, 64), text)
    assert logits.shape == (2, 4, 64, 64)


def test_wrong_text_dimension_is_refused_with_the_expected_shape(tiny_model):
    with pytest.raises(ValueError, match=r"\[K, 64\]"):
        tiny_model(torch.randn(1, 3, 64, 64), torch.randn(3, 10))


def test_synergy_features_match_the_definition(tiny_model):
    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 64)
    text = tiny_model.encode_text(["red star", "ring"])
    out = tiny_model.decode(tiny_model.encode_image(images), text)
    syn = synergy_features(tiny_model.projector, out.conditional, out.logits)
    assert syn.foreground.shape == syn.background.shape == (1, 2, 64)
    # Slow reference: project each category's features, average S_c over each 16x16 patch, weight.
    for c in range(2):
        projected = tiny_model.projector(out.conditional[0, c][None])[0]  # [T, h, w]
        maps = torch.sigmoid(out.logits[0, c])  # [64, 64]
        s = maps.reshape(4, 16, 4, 16).mean(dim=(1, 3))  # [h, w]
        fg = (projected * s).sum(dim=(1, 2)) / 16
        bg = (projected * (1 - s)).sum(dim=(1, 2)) / 16
        torch.testing.assert_close(syn.foreground[0, c], fg, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(syn.background[0, c], bg, atol=1e-5, rtol=1e-4)


def test_unknown_backbone_gives_a_clear_error():
    with pytest.raises(ValueError, match="unknown CLIP backbone 'ViT-Q-99'"):
        create_model(SynSegConfig(clip_model="ViT-Q-99"))


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of"):
        get_config("resnet-9000")


def test_config_rejects_decreasing_extract_layers():
    with pytest.raises(ValueError, match="strictly increasing"):
        SynSegConfig(extract_layers=(9, 7, 3))


def test_openai_preset_uses_quick_gelu():
    assert get_config("vit-b-16-openai").quick_gelu is True
    assert get_config("vit-b-16").quick_gelu is False
