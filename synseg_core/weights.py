"""Import pretrained weights: CLIP towers (open_clip / OpenAI files) and CLIPSeg rd64 decoders.

The paper starts from OpenAI CLIP ViT-B/16 and initialises the decoder from
CLIPSeg. Files come from the user's disk (nothing is downloaded here):

- CLIP: an open_clip state dict (``.safetensors``, or ``.pt``/``.bin`` read with
  ``weights_only=True``), or OpenAI's TorchScript archive (read with
  ``torch.jit.load``, which restores tensors without running pickled code).
- CLIPSeg: the original ``rd64-uni.pth`` / ``rd64-uni-refined.pth`` layout
  (``reduces``, ``blocks``, ``film_mul``, ``trans_conv``) or the Hugging Face
  ``CLIPSegForImageSegmentation`` layout (``decoder.*`` and, if present,
  ``clip.*``, which then also replaces the CLIP towers).
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from synseg_core.checkpoint import CheckpointError, load_state, read_clip_config, read_safetensors
from synseg_core.model.synseg import SynSeg

_CLIP_EXTRAS = ("logit_scale", "logit_bias", "input_resolution", "context_length", "vocab_size")
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors of a weights file and whether it was an OpenAI TorchScript archive; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        return read_safetensors(path), False
    try:
        if _is_torchscript(path):
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict()), True
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}, False


def clip_to_synseg(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip CLIP keys -> SynSeg keys (``visual.*`` -> image encoder, text tower -> text encoder)."""
    converted = {}
    for key, value in state.items():
        if key in _CLIP_EXTRAS or key == "attn_mask":
            continue
        if key.startswith("visual."):
            converted[f"image_encoder.{key}"] = value
        elif key.startswith(_TEXT_PREFIXES):
            converted[f"text_encoder.{key}"] = value
    return converted


def load_clip_weights(model: SynSeg, path: str | Path) -> SynSeg:
    """Load a CLIP checkpoint file into the frozen image and text towers (decoder untouched)."""
    state, is_openai = read_state_dict(path)
    if is_openai and not model.config.quick_gelu:
        raise CheckpointError(
            f"{path}: OpenAI CLIP weights need QuickGELU; build the model with preset 'vit-b-16-openai' "
            "(or quick_gelu=true in its config)"
        )
    converted = clip_to_synseg(state)
    if not converted:
        raise CheckpointError(f"{path}: no CLIP tensors found (expected open_clip keys such as 'visual.conv1.weight')")
    towers = {k: v for k, v in model.state_dict().items() if k.startswith(("image_encoder.", "text_encoder."))}
    missing = sorted(set(towers) - set(converted))
    if missing:
        raise CheckpointError(f"{path}: does not fit this model: {len(missing)} CLIP tensors missing, e.g. {missing[:5]}")
    try:
        load_state(model, converted, path, strict=False)
    except CheckpointError as exc:
        described = read_clip_config(path)
        hint = (f'this file describes its CLIP in its metadata: set model.overrides={{"clip_config": {json.dumps(described)}}}'
                if described else "a CLIP of another shape needs the model preset that matches it, or its open_clip config as "
                'model.overrides={"clip_config": {"embed_dim": ..., "vision_cfg": {...}, "text_cfg": {...}}}')
        raise CheckpointError(f"{exc}; {hint}") from exc
    return model


def _hf_attention(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF separate q/k/v projections -> one packed ``in_proj`` (nn.MultiheadAttention's layout)."""
    return {
        "in_proj_weight": torch.cat([state[f"{prefix}.{p}_proj.weight"] for p in "qkv"]),
        "in_proj_bias": torch.cat([state[f"{prefix}.{p}_proj.bias"] for p in "qkv"]),
        "out_proj.weight": state[f"{prefix}.out_proj.weight"],
        "out_proj.bias": state[f"{prefix}.out_proj.bias"],
    }


def _hf_layers(source: str, target: str, names: Mapping[str, str], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert every HF transformer layer under ``source`` into ``target`` with per-module renames."""
    out = {}
    indices = sorted({int(k[len(source) :].split(".")[0]) for k in state if k.startswith(source)})
    for i in indices:
        for key, value in _hf_attention(f"{source}{i}.self_attn", state).items():
            out[f"{target}{i}.{names['attn']}.{key}"] = value
        for hf_name, ours in names.items():
            if hf_name == "attn":
                continue
            for param in ("weight", "bias"):
                out[f"{target}{i}.{ours}.{param}"] = state[f"{source}{i}.{hf_name}.{param}"]
    return out


_HF_CLIP_BLOCK = {"attn": "attn", "layer_norm1": "ln_1", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj", "layer_norm2": "ln_2"}
_HF_DECODER_BLOCK = {"attn": "self_attn", "layer_norm1": "norm1", "mlp.fc1": "linear1", "mlp.fc2": "linear2", "layer_norm2": "norm2"}


def hf_clip_to_synseg(state: Mapping[str, torch.Tensor], prefix: str = "clip.") -> dict[str, torch.Tensor]:
    """Hugging Face CLIP(Seg) towers -> SynSeg image/text encoder keys."""
    v, t = f"{prefix}vision_model.", f"{prefix}text_model."
    out = {
        "image_encoder.visual.class_embedding": state[f"{v}embeddings.class_embedding"],
        "image_encoder.visual.conv1.weight": state[f"{v}embeddings.patch_embedding.weight"],
        "image_encoder.visual.positional_embedding": state[f"{v}embeddings.position_embedding.weight"],
        "image_encoder.visual.proj": state[f"{prefix}visual_projection.weight"].t().contiguous(),
        "text_encoder.token_embedding.weight": state[f"{t}embeddings.token_embedding.weight"],
        "text_encoder.positional_embedding": state[f"{t}embeddings.position_embedding.weight"],
        "text_encoder.text_projection": state[f"{prefix}text_projection.weight"].t().contiguous(),
    }
    for hf_name, ours in (
        (f"{v}pre_layrnorm", "image_encoder.visual.ln_pre"),
        (f"{v}post_layernorm", "image_encoder.visual.ln_post"),
        (f"{t}final_layer_norm", "text_encoder.ln_final"),
    ):
        out[f"{ours}.weight"], out[f"{ours}.bias"] = state[f"{hf_name}.weight"], state[f"{hf_name}.bias"]
    out.update(_hf_layers(f"{v}encoder.layers.", "image_encoder.visual.transformer.resblocks.", _HF_CLIP_BLOCK, state))
    out.update(_hf_layers(f"{t}encoder.layers.", "text_encoder.transformer.resblocks.", _HF_CLIP_BLOCK, state))
    return out


def _head_keys(source: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"decoder.head.{k[len(source) + 1:]}": v for k, v in state.items() if k.startswith(f"{source}.")}


def clipseg_to_synseg(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """CLIPSeg weights in either layout -> SynSeg keys, and the layout's name ('original' or 'huggingface')."""
    if any(k.startswith("decoder.film_mul") for k in state):
        out = {
            "decoder.film.film_mul.weight": state["decoder.film_mul.weight"],
            "decoder.film.film_mul.bias": state["decoder.film_mul.bias"],
            "decoder.film.film_add.weight": state["decoder.film_add.weight"],
            "decoder.film.film_add.bias": state["decoder.film_add.bias"],
            **{k: v for k, v in state.items() if k.startswith("decoder.reduces.")},
            **_head_keys("decoder.transposed_convolution", state),
            **_hf_layers("decoder.layers.", "decoder.layers.", _HF_DECODER_BLOCK, state),
        }
        if any(k.startswith("clip.vision_model.") for k in state):
            out.update(hf_clip_to_synseg(state))
        return out, "huggingface"
    if any(k.startswith("film_mul") for k in state):
        out = {f"decoder.film.{k}": v for k, v in state.items() if k.startswith(("film_mul.", "film_add."))}
        out.update({f"decoder.{k}": v for k, v in state.items() if k.startswith("reduces.")})
        out.update({f"decoder.layers.{k[len('blocks.'):]}": v for k, v in state.items() if k.startswith("blocks.")})
        out.update(_head_keys("trans_conv", state))
        return out, "original"
    raise CheckpointError("not a CLIPSeg checkpoint: found neither 'film_mul.*' (original) nor 'decoder.film_mul.*' (Hugging Face)")


def import_clipseg_weights(model: SynSeg, source: str | Path | Mapping[str, torch.Tensor]) -> str:
    """Initialise FiLM + decoder (and, for HF files with CLIP inside, the towers) from CLIPSeg; returns the layout."""
    if isinstance(source, Mapping):
        state, name = dict(source), "<state dict>"
    else:
        state, name = read_state_dict(source)[0], str(source)
    try:
        converted, layout = clipseg_to_synseg(state)
    except KeyError as exc:
        raise CheckpointError(f"{name}: CLIPSeg checkpoint is missing {exc}") from exc
    except CheckpointError as exc:
        raise CheckpointError(f"{name}: {exc}") from exc
    decoder = {k for k in model.state_dict() if k.startswith("decoder.")}
    missing = sorted(decoder - set(converted))
    if missing:
        raise CheckpointError(
            f"{name}: CLIPSeg {layout} weights do not cover this decoder ({len(missing)} missing, e.g. {missing[:4]}); "
            "check reduce_dim, extract_layers and refined_head in the model config"
        )
    load_state(model, converted, name, strict=False)
    return layout
