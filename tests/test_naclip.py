"""NACLIP and ClearCLIP: the last-block attention change against a slow reference written from the papers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from synseg_core.baselines.naclip import TrainingFreeCLIP, from_towers, last_block_attention
from synseg_core.checkpoint import load_model
from synseg_core.evaluate import main as evaluate_main
from synseg_core.pretrained import main as pretrained_main
from synseg_core.runtime.segmenter import Segmenter


def reference_attention(block, x, grid, method, std=5.0):
    """Equations, one head, one query and one key at a time.

    NACLIP: a_ij = softmax_j(k_i·k_j / sqrt(d) + w_ij), w_ij = exp(-|p_i - p_j|² / (2 std²)) for two patch
    tokens (p = (row, column) on the grid, row-major), 0 when either is the CLS token.
    ClearCLIP: a_ij = softmax_j(q_i·q_j / sqrt(d)). Output: out_proj(concat_h sum_j a_ij v_j); no residual, no FFN.
    """
    attn = block.attn
    tokens, width = x.shape[1], x.shape[2]
    heads = attn.num_heads
    d = width // heads
    normed = block.ln_1(x)[0]
    q, k, v = (normed @ attn.in_proj_weight[i * width:(i + 1) * width].T + attn.in_proj_bias[i * width:(i + 1) * width]
               for i in range(3))
    position = [None] + [(r, c) for r in range(grid[0]) for c in range(grid[1])]
    out = torch.zeros(tokens, width, dtype=torch.float64)
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        for i in range(tokens):
            logits = torch.zeros(tokens, dtype=torch.float64)
            for j in range(tokens):
                if method == "naclip":
                    logits[j] = float(k[i, part] @ k[j, part]) / math.sqrt(d)
                    if position[i] is not None and position[j] is not None:
                        distance2 = (position[i][0] - position[j][0]) ** 2 + (position[i][1] - position[j][1]) ** 2
                        logits[j] += math.exp(-distance2 / (2 * std**2))
                else:
                    logits[j] = float(q[i, part] @ q[j, part]) / math.sqrt(d)
            weights = torch.softmax(logits, dim=0)
            out[i, part] = sum(weights[j] * v[j, part].double() for j in range(tokens))
    return attn.out_proj(out.float())[None]


@pytest.fixture(scope="module")
def rival_models(tiny_model):
    return {method: from_towers(tiny_model, method) for method in ("naclip", "clearclip")}


@pytest.mark.parametrize("method", ["naclip", "clearclip"])
@pytest.mark.parametrize("std", [5.0, 1.0])
def test_last_block_attention_matches_the_papers_equations(rival_models, method, std):
    model = rival_models[method]
    block = model.image_encoder.visual.transformer.resblocks[-1]
    grid = (3, 4)  # not square: a row/column mix-up cannot hide
    x = torch.randn(1, 1 + 12, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = last_block_attention(block, x, grid, method, std)
        slow = reference_attention(block, x, grid, method, std)
    assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()


def test_the_neighbourhood_prior_changes_naclip_and_only_naclip(rival_models):
    block = rival_models["naclip"].image_encoder.visual.transformer.resblocks[-1]
    x = torch.randn(1, 1 + 16, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        near = last_block_attention(block, x, (4, 4), "naclip", std=1.0)
        far = last_block_attention(block, x, (4, 4), "naclip", std=1e3)  # a flat prior: a constant shift on patches
    assert (near - far)[:, 1:].abs().max() > 1e-3


def test_dense_features_are_the_reduced_last_block_in_the_joint_space(rival_models):
    model = rival_models["naclip"]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    visual = model.image_encoder.visual
    with torch.no_grad():
        features = model.image_encoder(images)
        tokens = last_block_attention(visual.transformer.resblocks[-1], features.activations[0], features.grid, "naclip")
        expected = torch.nn.functional.normalize(visual.ln_post(tokens[:, 1:]) @ visual.proj, dim=-1)
        dense = model.dense_features(images)
    assert dense.shape == (2, model.text_dim, 4, 4)
    assert torch.allclose(dense.flatten(2).transpose(1, 2), expected, atol=1e-6)


def test_a_text_embedding_equal_to_a_patch_feature_wins_that_patch(rival_models):
    model = rival_models["clearclip"]
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        dense = model.dense_features(images)[0]
        logits = model(images, torch.stack([dense[:, 0, 0], dense[:, 3, 3]]))
    assert logits.shape == (1, 2, 64, 64)
    assert logits[0, :, 8, 8].argmax() == 0 and logits[0, :, 56, 56].argmax() == 1


def test_a_naclip_checkpoint_from_clip_weights_runs_as_a_segmenter(tiny_model, tmp_path):
    towers = {k.removeprefix("image_encoder.").removeprefix("text_encoder."): v.contiguous()
              for k, v in tiny_model.state_dict().items() if k.startswith(("image_encoder.", "text_encoder."))}
    save_file(towers, str(tmp_path / "clip.safetensors"))  # open_clip key names: visual.*, transformer.*, ...
    code = pretrained_main(["convert", "--clip", str(tmp_path / "clip.safetensors"), "--method", "naclip",
                            "--preset", "tiny", "--out", str(tmp_path / "naclip")])
    assert code == 0
    model = load_model(tmp_path / "naclip")
    assert isinstance(model, TrainingFreeCLIP) and model.config.method == "naclip"
    assert not any(k.startswith("decoder.") for k in model.state_dict())
    torch.testing.assert_close(model.image_encoder.visual.conv1.weight, tiny_model.image_encoder.visual.conv1.weight)
    result = Segmenter.from_checkpoint(tmp_path / "naclip").segment(np.zeros((40, 56, 3), np.uint8), ["cat", "sky"], threshold=0)
    assert result.labels.shape == (40, 56) and set(np.unique(result.labels)) <= {0, 1}


@pytest.mark.parametrize("method", ["naclip", "clearclip"])
def test_evaluate_scores_the_rival_on_a_checkpoints_clip(tiny_checkpoint, tmp_path, method):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("sky\ncat\n")
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.ones((32, 48), np.uint8)).save(root / "masks" / "a.png")
    code = evaluate_main(["-c", str(tiny_checkpoint), "--method", method, "--dataset", "folder", "--data-root", str(root),
                          "--protocol", "synthetic", "--out", str(tmp_path / "out"), "--quiet"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert code == 0 and results["method"] == method and results["num_images"] == 1
    assert np.array(results["confusion"]).sum() == 32 * 48


def test_a_huggingface_clip_folder_converts_into_naclip_with_the_same_towers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the reference CLIP implementation")
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3, image_size=64,
                           patch_size=16),
        projection_dim=64,
    )
    torch.manual_seed(0)
    reference = transformers.CLIPModel(config).eval()
    reference.save_pretrained(tmp_path / "hf-clip")
    assert pretrained_main(["convert", "--clip", str(tmp_path / "hf-clip"), "--method", "naclip", "--out", str(tmp_path / "naclip")]) == 0
    model = load_model(tmp_path / "naclip")
    assert model.config.method == "naclip" and model.config.quick_gelu
    tokens = model.text_encoder.tokenizer(["a red door"])
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        text = reference.get_text_features(input_ids=tokens)
        image = reference.get_image_features(pixel_values=pixels)
        pooled = model.image_encoder.visual(pixels)
    text, image = (getattr(t, "pooler_output", t) for t in (text, image))  # transformers 5 returns output objects
    torch.testing.assert_close(model.text_encoder(tokens), text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled, image, atol=1e-5, rtol=1e-4)
