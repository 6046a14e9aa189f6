"""Loading CLIP tower weights from open_clip / OpenAI checkpoint files the test writes."""
from __future__ import annotations

import pytest
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file

from synseg_core import CheckpointError, create_model
from synseg_core.config import TINY_CLIP
from synseg_core.weights import load_clip_weights, read_state_dict


def trained_clip(seed: int = 3, quick_gelu: bool = False) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(**{**TINY_CLIP, "quick_gelu": quick_gelu})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_open_clip_weights_load_into_both_frozen_towers(tmp_path, suffix):
    clip = trained_clip()
    path = tmp_path / f"clip{suffix}"
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    model = load_clip_weights(create_model("tiny", seed=0), path)
    torch.testing.assert_close(model.image_encoder.visual.conv1.weight, clip.visual.conv1.weight)
    tokens = model.text_encoder.tokenizer(["a red star"])
    with torch.no_grad():
        torch.testing.assert_close(model.text_encoder(tokens), clip.encode_text(tokens))
    assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_text_cache_does_not_serve_embeddings_of_the_old_weights(tmp_path):
    model = create_model("tiny", seed=0)
    before = model.encode_text(["ring"])
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in trained_clip().state_dict().items()}, str(path))
    load_clip_weights(model, path)
    after = model.encode_text(["ring"])
    assert not torch.allclose(before, after)


def write_torchscript_archive(path, clip: CLIP) -> None:
    """An OpenAI-style TorchScript archive: a traced module holding the CLIP's tensors under open_clip's names."""
    class Archive(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, parameter in clip.named_parameters(recurse=False):
                self.register_parameter(name, parameter)

        def forward(self, x):
            return x

    torch.jit.save(torch.jit.trace(Archive(), torch.zeros(1)), str(path))


def test_openai_torchscript_archive_requires_quick_gelu(tmp_path):
    path = tmp_path / "ViT-tiny-openai.pt"
    write_torchscript_archive(path, trained_clip(quick_gelu=True))
    state, is_openai = read_state_dict(path)
    assert is_openai and "visual.conv1.weight" in state
    with pytest.raises(CheckpointError, match="QuickGELU"):
        load_clip_weights(create_model("tiny"), path)


def test_openai_torchscript_archive_loads_into_a_quick_gelu_model(tmp_path):
    clip = trained_clip(quick_gelu=True)
    path = tmp_path / "ViT-tiny-openai.pt"
    write_torchscript_archive(path, clip)
    model = load_clip_weights(create_model("tiny", seed=0, quick_gelu=True), path)
    torch.testing.assert_close(model.image_encoder.visual.conv1.weight, clip.visual.conv1.weight)
    tokens = model.text_encoder.tokenizer(["a red star"])
    with torch.no_grad():  # equal features also need the same activation: QuickGELU in both towers
        torch.testing.assert_close(model.text_encoder(tokens), clip.encode_text(tokens))
        visual = model.image_encoder.visual
        torch.testing.assert_close(visual(torch.ones(1, 3, 64, 64)), clip.visual(torch.ones(1, 3, 64, 64)))


def test_clip_file_of_another_size_is_refused(tmp_path):
    bigger = CLIP(**{**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "width": 128}})
    path = tmp_path / "big.safetensors"
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_clip_weights(create_model("tiny"), path)


def test_garbage_file_is_named(tmp_path):
    path = tmp_path / "clip.pt"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=r"clip\.pt: not a readable weights file"):
        load_clip_weights(create_model("tiny"), path)
