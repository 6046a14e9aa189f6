"""Our decoder is CLIPSeg: weights converted from transformers' reference implementation give its logits."""
from __future__ import annotations

import pytest
import torch

from synseg_core import create_model
from synseg_core.checkpoint import CheckpointError
from synseg_core.weights import clipseg_to_synseg, import_clipseg_weights

transformers = pytest.importorskip("transformers", reason="transformers is the reference CLIPSeg implementation")

HF_VISION = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3, image_size=64, patch_size=16)
HF_TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77)
OUR_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def reference_clipseg(refined: bool) -> torch.nn.Module:
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    config = CLIPSegConfig(
        text_config=HF_TEXT, vision_config=HF_VISION, projection_dim=64, extract_layers=[1, 2, 3], reduce_dim=16,
        decoder_num_attention_heads=2, decoder_intermediate_size=64, conditional_layer=0,
        use_complex_transposed_convolution=refined,
    )
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(config).eval()
    with torch.no_grad():  # HF zero-inits biases; randomise them so a wrong bias mapping cannot hide
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return model


def our_model(refined: bool):
    return create_model(
        "tiny", clip_config=OUR_CLIP, quick_gelu=True, extract_layers=(1, 2, 3), reduce_dim=16, decoder_heads=2,
        decoder_ffn_dim=64, refined_head=refined, image_size=64,
    )


# The refined head's randomly initialised convolutions give logits of ~450, where float32 rounding alone
# is ~2e-4; it is compared in float64, the rd64-uni head (logits ~20) in both precisions.
@pytest.mark.parametrize(
    "refined, dtype",
    [(False, torch.float32), (False, torch.float64), (True, torch.float64)],
    ids=["rd64-uni-fp32", "rd64-uni-fp64", "rd64-refined-fp64"],
)
def test_converted_huggingface_clipseg_gives_the_same_logits(refined, dtype):
    reference = reference_clipseg(refined).to(dtype)
    ours = our_model(refined)
    assert import_clipseg_weights(ours, reference.state_dict()) == "huggingface"
    ours.to(dtype)

    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 64, 64, dtype=dtype)
    tokens = ours.text_encoder.tokenizer(["a photo of a door.", "a chair", "something on the floor"])
    with torch.no_grad():
        expected = reference(input_ids=tokens, pixel_values=pixels).logits  # [3, 64, 64], image i with text i
        text = ours.text_encoder(tokens)  # CLIPSeg conditions on the raw (unnormalised) text feature
        logits = ours.decode(ours.encode_image(pixels), text[:, None, :]).logits[:, 0]

    diff = (logits - expected).abs().max().item()
    assert diff <= 1e-4, f"max abs diff {diff:.2e}"
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero maps


def test_original_layout_loads_the_same_decoder_as_the_huggingface_layout():
    reference = reference_clipseg(refined=False)
    from_hf = our_model(False)
    import_clipseg_weights(from_hf, reference.state_dict())
    # Rebuild the original repository's key names from the converted decoder.
    original = {}
    for key, value in from_hf.state_dict().items():
        if key.startswith("decoder.film."):
            original[key.removeprefix("decoder.film.")] = value
        elif key.startswith("decoder.reduces."):
            original[key.removeprefix("decoder.")] = value
        elif key.startswith("decoder.layers."):
            original["blocks." + key.removeprefix("decoder.layers.")] = value
        elif key.startswith("decoder.head."):
            original["trans_conv." + key.removeprefix("decoder.head.")] = value
    from_original = our_model(False)
    assert import_clipseg_weights(from_original, original) == "original"
    for key, value in from_hf.state_dict().items():
        if key.startswith("decoder."):
            assert torch.equal(from_original.state_dict()[key], value), key


def test_clipseg_file_with_another_reduce_dim_is_refused_with_the_reason(tmp_path):
    reference = reference_clipseg(refined=False)
    mismatched = create_model("tiny", clip_config=OUR_CLIP, quick_gelu=True, reduce_dim=32, decoder_heads=2, decoder_ffn_dim=64)
    with pytest.raises(CheckpointError, match="wrong shape"):
        import_clipseg_weights(mismatched, reference.state_dict())


def test_a_state_dict_that_is_not_clipseg_is_named_as_such():
    with pytest.raises(CheckpointError, match="not a CLIPSeg checkpoint"):
        clipseg_to_synseg({"foo.weight": torch.zeros(1)})
