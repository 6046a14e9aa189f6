"""MaskCLIP baseline: the last block's value path, patch-text cosine maps, shared evaluation."""
import json

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from synseg_core.baselines.maskclip import MaskCLIP, maskclip_segmenter
from synseg_core.evaluate import main as evaluate_main


def test_dense_features_equal_last_block_attention_restricted_to_each_token_itself(tiny_model):
    """MaskCLIP's value path is exactly attention in which every token attends only to itself."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    backend = MaskCLIP(tiny_model)
    visual = tiny_model.image_encoder.visual
    last = visual.transformer.resblocks[-1]
    tokens = backend.trunk(images).activations[0][:, 1:]
    normed = last.ln_1(tokens)
    self_only = torch.full((tokens.shape[1], tokens.shape[1]), float("-inf")).fill_diagonal_(0.0)
    with torch.no_grad():
        attended = last.attn(normed, normed, normed, attn_mask=self_only, need_weights=False)[0]
        expected = F.normalize(visual.ln_post(attended) @ visual.proj, dim=-1)
    features = backend.dense_features(images)  # [B, T, 4, 4]
    assert features.shape == (2, tiny_model.text_dim, 4, 4)
    assert torch.allclose(features.flatten(2).transpose(1, 2), expected, atol=1e-5)


def test_a_text_embedding_equal_to_a_patch_feature_wins_that_patch(tiny_model):
    segmenter = maskclip_segmenter(tiny_model)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        features = segmenter.backend.model.dense_features(torch.from_numpy(pixels))[0]  # [T, 4, 4]
    text = torch.stack([features[:, 0, 0], features[:, 3, 3]]).numpy()
    logits = segmenter.backend.infer(pixels, text)  # the patch grid upsampled to the input by the torch backend
    assert logits.shape == (1, 2, 64, 64)
    assert logits[0, :, 8, 8].argmax() == 0  # centre of patch (0, 0)
    assert logits[0, :, 56, 56].argmax() == 1  # centre of patch (3, 3)
    assert np.isclose(logits[0, 0, 8, 8], 10.0 * (1.0 - 0.25), atol=0.5)  # scale * (cosine 1 - offset), bilinear blur


def test_maskclip_segments_through_the_shared_segmenter(tiny_model):
    segmenter = maskclip_segmenter(tiny_model)
    result = segmenter.segment(np.zeros((48, 80, 3), np.uint8), ["cat", "dog", "sky"], threshold=0.0)
    assert segmenter.backend_name == "torch" and type(segmenter.backend.model).__name__ == "MaskCLIP"
    assert result.labels.shape == (48, 80) and set(np.unique(result.labels)) <= {0, 1, 2}


def test_evaluate_cli_scores_maskclip_on_a_checkpoints_frozen_clip(tiny_checkpoint, tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("sky\ncat\n")
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.ones((32, 48), np.uint8)).save(root / "masks" / "a.png")
    code = evaluate_main(["-c", str(tiny_checkpoint), "--method", "maskclip", "--dataset", "folder", "--data-root", str(root),
                          "--protocol", "synthetic", "--out", str(tmp_path / "out"), "--quiet"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 0
    assert (results["method"], results["backend"], results["num_images"]) == ("maskclip", "torch", 1)
    assert np.array(results["confusion"]).sum() == 32 * 48
