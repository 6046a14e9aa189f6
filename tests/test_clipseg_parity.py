"""A converted CLIPSeg is CLIPSeg, end to end: ``Segmenter.segment`` gives transformers' CLIPSeg logits.

The reference is a small random ``CLIPSegForImageSegmentation`` with its processor (a ViT image processor
at 352² with ImageNet mean/std and a CLIP tokenizer), saved with ``save_pretrained`` as a Hugging Face
folder. ``python -m synseg_core.pretrained convert`` turns that folder into a SynSeg checkpoint, and our
product path (tokenizer, text tower, prompt handling, conditioning, preprocessing, backend,
post-processing) must reproduce the reference's logits for the same image and prompt text.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synseg_core import create_model
from synseg_core.checkpoint import CheckpointError
from synseg_core.pretrained import convert
from synseg_core.runtime.processing import preprocess
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.weights import clipseg_to_synseg, import_clipseg_weights

transformers = pytest.importorskip("transformers", reason="transformers is the reference CLIPSeg implementation")

HF_VISION = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3, image_size=64, patch_size=16)
HF_TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77)
OUR_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
PROMPTS = ["a photo of a door.", "a chair", "something on the floor"]


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
        if refined:  # random refined heads give logits of ~450, beyond float32's 1e-4; scale them to CLIPSeg's range
            for p in model.decoder.transposed_convolution.parameters():
                p.mul_(0.25)
    return model


def clip_tokenizer_files(folder) -> None:
    """vocab.json + merges.txt of CLIP's BPE (the files every CLIPSeg repository ships), from open_clip's copy."""
    import open_clip

    tokenizer = open_clip.tokenizer.SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps({special.get(k, k): v for k, v in tokenizer.encoder.items()}))
    merges = [" ".join(pair) for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def reference_processor(folder):
    from transformers import CLIPSegProcessor, CLIPTokenizer, ViTImageProcessor

    clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    images = ViTImageProcessor(size={"height": 352, "width": 352}, resample=2, **IMAGENET)
    return CLIPSegProcessor(image_processor=images, tokenizer=tokenizer)


@pytest.fixture(scope="module", params=[False, True], ids=["rd64-uni", "rd64-refined"])
def clipseg(request, tmp_path_factory):
    """(reference model, its processor, our Segmenter on the converted checkpoint, that checkpoint)."""
    folder = tmp_path_factory.mktemp("hf-clipseg")
    reference = reference_clipseg(request.param)
    processor = reference_processor(folder)
    reference.save_pretrained(folder)
    processor.save_pretrained(folder)
    checkpoint = convert(folder, None, folder.parent / f"{folder.name}-synseg")
    return reference, processor, Segmenter.from_checkpoint(checkpoint), checkpoint


def test_converted_checkpoint_records_clipseg_inference_settings(clipseg):
    config = clipseg[2].config
    assert (config.image_size, config.prompt_set, config.text_embedding) == (352, "verbatim", "raw")
    assert config.mean == pytest.approx(IMAGENET["image_mean"]) and config.std == pytest.approx(IMAGENET["image_std"])
    assert config.extract_layers == (1, 2, 3) and config.source["converted_from"]["clipseg"]["files"]["config.json"]


def test_preprocessing_equals_the_clipseg_processor(clipseg):
    _, processor, segmenter, _ = clipseg
    image = np.random.default_rng(0).integers(0, 256, (352, 352, 3), dtype=np.uint8)
    expected = processor(images=[image], return_tensors="np")["pixel_values"]
    ours = preprocess(image, segmenter.input_size, segmenter.config.mean, segmenter.config.std)
    assert np.abs(ours - expected).max() < 1e-5


def camera_image(seed: int = 0) -> np.ndarray:
    """A 480x640 frame with smooth structure and noise, so the resize filter matters."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    return np.clip(coarse.astype(int) + rng.integers(-20, 21, coarse.shape), 0, 255).astype(np.uint8)


def test_a_camera_frame_is_resized_as_the_clipseg_processor_resizes_it(clipseg):
    _, processor, segmenter, _ = clipseg
    image = camera_image()
    expected = processor(images=[image], return_tensors="np")["pixel_values"]
    ours = preprocess(image, segmenter.input_size, segmenter.config.mean, segmenter.config.std, segmenter.config.resize_antialias)
    one_level = 1.0 / 255 / min(segmenter.config.std)  # PIL (ours) and transformers' torchvision resize round differently
    assert np.abs(ours - expected).max() <= 1.01 * one_level  # and few values differ at all (measured ~2%):
    assert np.abs(ours - expected).mean() < 0.05 * one_level
    plain = preprocess(image, segmenter.input_size, segmenter.config.mean, segmenter.config.std)
    assert np.abs(plain - expected).mean() > 10 * np.abs(ours - expected).mean()  # OpenCV's bilinear would not do


def test_segmenter_on_a_camera_frame_gives_transformers_scores_resized_to_the_frame(clipseg):
    """Same pixels in (the resize is the test above), so this checks the network and the post-processing at 480x640."""
    reference, processor, segmenter, _ = clipseg
    image = camera_image(1)
    pixels = preprocess(image, segmenter.input_size, segmenter.config.mean, segmenter.config.std, segmenter.config.resize_antialias)
    tokens = processor(text=PROMPTS, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = reference(**tokens, pixel_values=torch.from_numpy(pixels).repeat(len(PROMPTS), 1, 1, 1)).logits[None]
    resized = torch.nn.functional.interpolate(expected, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    confidence = torch.sigmoid(resized.double()).max(dim=0).values.numpy()
    result = segmenter.segment(image, PROMPTS)
    assert result.confidence.shape == (480, 640)
    assert np.abs(result.confidence - confidence).max() <= 2.5e-4  # bilinear upsampling: OpenCV's vs torch's, and 1e-4 logits


def test_segmenter_gives_the_logits_and_scores_of_transformers_clipseg(clipseg):
    reference, processor, segmenter, _ = clipseg
    image = np.random.default_rng(1).integers(0, 256, (352, 352, 3), dtype=np.uint8)
    inputs = processor(text=PROMPTS, images=[image] * len(PROMPTS), padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits.numpy()  # [K, 352, 352]: the image with each prompt

    text = segmenter.encode_vocabulary(PROMPTS)  # the product's tokenizer, text tower, prompt form and conditioning
    pixels = preprocess(image, segmenter.input_size, segmenter.config.mean, segmenter.config.std)
    logits = segmenter.backend.infer(pixels, text)[0]  # network-resolution logits [K, 352, 352]
    result = segmenter.segment(image, PROMPTS)

    diff = np.abs(logits - expected).max()
    assert diff <= 1e-4, f"max abs logit difference {diff:.2e}"
    assert np.abs(expected).max() > 1.0  # not two near-zero maps
    confidence = (1.0 / (1.0 + np.exp(-expected.astype(np.float64)))).max(axis=0)
    assert np.abs(result.confidence - confidence).max() <= 2.5e-5  # sigmoid slope <= 1/4 times the logit bound
    np.testing.assert_array_equal(result.vocabulary, PROMPTS)


def test_text_conditioning_is_the_raw_clipseg_feature_not_the_normalised_embedding(clipseg):
    reference, processor, segmenter, _ = clipseg
    tokens = processor(text=PROMPTS[:1], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        feature = reference.clip.get_text_features(**tokens)
    feature = getattr(feature, "pooler_output", feature).numpy()  # transformers 5 returns an output object
    np.testing.assert_allclose(segmenter.encode_vocabulary(PROMPTS[:1]), feature, atol=1e-5)
    assert abs(np.linalg.norm(feature) - 1.0) > 0.1  # the test would not tell the two apart otherwise


def our_model(refined: bool):
    return create_model(
        "tiny", clip_config=OUR_CLIP, quick_gelu=True, extract_layers=(1, 2, 3), reduce_dim=16, decoder_heads=2,
        decoder_ffn_dim=64, refined_head=refined, image_size=64,
    )


def test_float64_decoder_matches_to_rounding():
    """The decoder mapping alone, in float64, where only rounding separates the two implementations."""
    reference = reference_clipseg(refined=True).double()
    ours = our_model(True)
    import_clipseg_weights(ours, reference.state_dict())
    ours.double()
    pixels = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tokens = ours.text_encoder.tokenizer(PROMPTS[:2])
    with torch.no_grad():
        expected = reference(input_ids=tokens, pixel_values=pixels).logits
        logits = ours.decode(ours.encode_image(pixels), ours.text_encoder(tokens)[:, None, :]).logits[:, 0]
    assert (logits - expected).abs().max().item() <= 1e-10


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


def test_clipseg_file_with_another_reduce_dim_is_refused_with_the_reason():
    reference = reference_clipseg(refined=False)
    mismatched = create_model("tiny", clip_config=OUR_CLIP, quick_gelu=True, reduce_dim=32, decoder_heads=2, decoder_ffn_dim=64)
    with pytest.raises(CheckpointError, match="wrong shape"):
        import_clipseg_weights(mismatched, reference.state_dict())


def test_a_state_dict_that_is_not_clipseg_is_named_as_such():
    with pytest.raises(CheckpointError, match="not a CLIPSeg checkpoint"):
        clipseg_to_synseg({"foo.weight": torch.zeros(1)})



def test_the_onnx_export_of_a_converted_clipseg_keeps_its_conditioning(clipseg, tmp_path):
    """Text tower and decoder in ONNX (no torch at run time): the same raw text features and CLIPSeg's logits."""
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime backend")
    from synseg_core.checkpoint import load_model
    from synseg_core.export import export_onnx
    from synseg_core.runtime.segmenter import Segmenter

    reference, processor, segmenter, checkpoint = clipseg
    export_onnx(load_model(checkpoint), tmp_path / "onnx", text_encoder=True, exporter="legacy")
    exported = Segmenter.from_export(tmp_path / "onnx")
    np.testing.assert_allclose(exported.encode_vocabulary(PROMPTS), segmenter.encode_vocabulary(PROMPTS), atol=1e-4)
    image = np.random.default_rng(1).integers(0, 256, (352, 352, 3), dtype=np.uint8)
    inputs = processor(text=PROMPTS, images=[image] * len(PROMPTS), padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits.numpy()
    pixels = preprocess(image, exported.input_size, exported.config.mean, exported.config.std)
    assert np.abs(exported.backend.infer(pixels, exported.encode_vocabulary(PROMPTS))[0] - expected).max() <= 1e-3


def test_the_embedding_cache_never_serves_one_conditioning_for_the_other():
    normalized = create_model("tiny", seed=0)
    raw = create_model("tiny", seed=0, text_embedding="raw")  # same weights, same shared cache
    first = normalized.encode_text(["ring"], "single")
    second = raw.encode_text(["ring"], "single")  # one template: the raw feature is the normalised one's direction
    assert torch.allclose(first.norm(dim=-1), torch.ones(1))
    assert not torch.allclose(second.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(torch.nn.functional.normalize(second, dim=-1), first)
