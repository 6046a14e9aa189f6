"""Checkpoints: safetensors + JSON, clear errors for every way a file can be wrong."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from synseg_core import CheckpointError, create_model, load_model, save_model
from synseg_core.checkpoint import load_config


def test_saved_model_reloads_with_identical_outputs(tmp_path, tiny_model):
    save_model(tiny_model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    images = torch.randn(1, 3, 64, 64)
    text = tiny_model.encode_text(["a", "b"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, text), tiny_model(images, text))


def test_config_json_holds_what_deployment_needs(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    for key in ("clip_model", "extract_layers", "image_size", "mean", "std", "prompt_set", "threshold"):
        assert key in config


def test_checkpoint_file_path_resolves_to_its_directory(tiny_checkpoint):
    assert load_config(tiny_checkpoint / "model.safetensors").image_size == 64


def test_truncated_weights_name_the_file(tmp_path, tiny_checkpoint):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable or truncated"):
        load_model(broken)


def test_missing_weights_file_is_named(tmp_path, tiny_checkpoint):
    broken = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_model(broken)


def test_missing_config_is_explained(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_model(tmp_path)


def test_corrupt_config_is_named(tmp_path, tiny_checkpoint):
    broken = tmp_path / "badcfg"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not a valid SynSeg config"):
        load_model(broken)


def test_weights_of_another_architecture_are_refused(tmp_path, tiny_checkpoint):
    other = create_model("tiny", reduce_dim=32, decoder_heads=2)
    save_model(other, tmp_path / "other")
    shutil.copy(tiny_checkpoint / "config.json", tmp_path / "other" / "config.json")
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(tmp_path / "other")


def test_missing_keys_are_listed(tmp_path, tiny_model):
    directory = save_model(tiny_model, tmp_path / "partial")
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items() if not k.startswith("projector.")}
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys, e\.g\. \['projector"):
        load_model(directory)


def test_config_overrides_apply_on_top_of_the_checkpoint(tiny_checkpoint, tiny_model):
    model = load_model(tiny_checkpoint, fss_source="visual", threshold=0.3)
    assert (model.config.fss_source, model.config.threshold) == ("visual", 0.3)
    assert load_config(tiny_checkpoint).fss_source == "conditional"  # the file is unchanged
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_an_override_that_changes_the_architecture_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_model(tiny_checkpoint, reduce_dim=32)


def test_not_a_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_model(tmp_path / "nowhere")


def torch_load_calls(text):
    """Every ``torch.load(...)`` call in source text, with balanced parentheses."""
    calls, start = [], text.find("torch.load(")
    while start != -1:
        depth, end = 0, start + len("torch.load")
        for end in range(end, len(text)):  # noqa: B020 - `end` is meant to continue from the call's name
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        calls.append(text[start : end + 1])
        start = text.find("torch.load(", end)
    return calls


def test_repo_never_unpickles_without_weights_only():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = [*root.glob("synseg_core/**/*.py"), *root.glob("synseg_ros/**/*.py"), *root.glob("benchmarks/*.py")]
    offenders = [f"{p.name}: {c}" for p in sources for c in torch_load_calls(p.read_text()) if "weights_only=True" not in c]
    assert torch_load_calls("x = torch.load(str(p), map_location='cpu',\n weights_only=True)") != []
    assert offenders == []
