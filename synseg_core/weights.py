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
from typing import Any

import torch

from synseg_core.checkpoint import CheckpointError, load_state, read_clip_config, read_safetensors
from synseg_core.config import IMAGENET_MEAN, IMAGENET_STD, SynSegConfig
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


# ---- Whole models from published files: a SynSeg config that says what the weights are, plus the weights ----

#: How CLIPSeg was run and trained: 352² input, ImageNet mean/std, the prompt text as given, the raw text feature.
CLIPSEG_INFERENCE = {
    "image_size": 352, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "resize_antialias": True, "prompt_set": "verbatim",
    "text_embedding": "raw",
}
#: The architecture of the published CLIPSeg rd64 checkpoints (OpenAI CLIP ViT-B/16, blocks 3, 6, 9).
CLIPSEG_RD64 = {"clip_model": "ViT-B-16", "quick_gelu": True, "extract_layers": (3, 6, 9), "reduce_dim": 64,
                "decoder_heads": 4, "decoder_ffn_dim": 2048, "cond_layer": 0, **CLIPSEG_INFERENCE}

# Defaults of transformers' CLIP(Seg) configs, which the published config.json files omit.
_HF_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}
_HF_TEXT = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}
_HF_CLIPSEG = {"projection_dim": 512, "extract_layers": [3, 6, 9], "reduce_dim": 64, "decoder_num_attention_heads": 4,
               "decoder_intermediate_size": 2048, "conditional_layer": 0, "use_complex_transposed_convolution": False}
_OPEN_CLIP_VIT_B_16 = {"embed_dim": 512, "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16,
                                                        "head_width": 64, "mlp_ratio": 4.0},
                       "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12,
                                    "mlp_ratio": 4.0}}


def clip_config_from_huggingface(hf: Mapping[str, Any]) -> dict[str, Any]:
    """SynSeg config fields for the CLIP towers a transformers CLIP/CLIPSeg ``config.json`` describes."""
    vision = {**_HF_VISION, **(hf.get("vision_config") or {})}
    text = {**_HF_TEXT, **(hf.get("text_config") or {})}
    acts = {vision["hidden_act"], text["hidden_act"]}
    if not acts <= {"quick_gelu", "gelu"} or len(acts) > 1:
        raise CheckpointError(f"CLIP towers with activation {sorted(acts)} are not supported (quick_gelu or gelu)")
    clip = {
        "embed_dim": int(hf.get("projection_dim", 512)),
        "vision_cfg": {"image_size": int(vision["image_size"]), "layers": int(vision["num_hidden_layers"]),
                       "width": int(vision["hidden_size"]), "patch_size": int(vision["patch_size"]),
                       "head_width": int(vision["hidden_size"]) // int(vision["num_attention_heads"]),
                       "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"]},
        "text_cfg": {"context_length": int(text["max_position_embeddings"]), "vocab_size": int(text["vocab_size"]),
                     "width": int(text["hidden_size"]), "heads": int(text["num_attention_heads"]),
                     "layers": int(text["num_hidden_layers"]), "mlp_ratio": text["intermediate_size"] / text["hidden_size"]},
    }
    quick_gelu = acts == {"quick_gelu"}
    if clip == _OPEN_CLIP_VIT_B_16:  # name the registered architecture, so the config reads as what it is
        return {"clip_model": "ViT-B-16", "clip_config": None, "quick_gelu": quick_gelu}
    return {"clip_model": "custom", "clip_config": {**clip, "quick_gelu": quick_gelu}, "quick_gelu": quick_gelu}


def clipseg_config_from_huggingface(hf: Mapping[str, Any], preprocessor: Mapping[str, Any] | None) -> SynSegConfig:
    """The SynSeg config of a transformers ``CLIPSegForImageSegmentation`` (``config.json`` + ``preprocessor_config.json``)."""
    seg = {**_HF_CLIPSEG, **hf}
    fields: dict[str, Any] = {**clip_config_from_huggingface(hf), **CLIPSEG_INFERENCE}
    fields.update(
        extract_layers=tuple(seg["extract_layers"]), reduce_dim=int(seg["reduce_dim"]),
        decoder_heads=int(seg["decoder_num_attention_heads"]), decoder_ffn_dim=int(seg["decoder_intermediate_size"]),
        cond_layer=int(seg["conditional_layer"]), refined_head=bool(seg["use_complex_transposed_convolution"]),
    )
    fields.update(preprocessing_from_huggingface(preprocessor))
    try:
        return SynSegConfig.from_dict(fields)
    except ValueError as exc:
        raise CheckpointError(f"CLIPSeg config does not describe a model SynSeg can build: {exc}") from exc


def preprocessing_from_huggingface(preprocessor: Mapping[str, Any] | None) -> dict[str, Any]:
    """Input size and mean/std from a ``preprocessor_config.json`` (CLIPSeg's defaults where it is absent)."""
    if preprocessor is None:
        return {}
    size = preprocessor.get("size", CLIPSEG_INFERENCE["image_size"])
    if isinstance(size, Mapping):
        if size.get("height") != size.get("width") or size.get("height") is None:
            raise CheckpointError(f"preprocessor size {dict(size)}: only square inputs are supported")
        size = size["height"]
    if preprocessor.get("resample", 2) != 2:  # PIL.Image.BILINEAR
        raise CheckpointError(f"preprocessor resample={preprocessor['resample']}: only bilinear (2), CLIPSeg's, is supported")
    if preprocessor.get("do_normalize", True) is False or preprocessor.get("do_rescale", True) is False:
        raise CheckpointError("preprocessor without rescale/normalisation is not supported: SynSeg always scales to [0, 1] and normalises")
    if abs(float(preprocessor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CheckpointError(f"preprocessor rescale_factor {preprocessor['rescale_factor']} is not 1/255")
    out: dict[str, Any] = {"image_size": int(size)}
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        if theirs in preprocessor:
            out[ours] = tuple(float(v) for v in preprocessor[theirs])
    return out


def _reduce_dim_check(name: str, state: Mapping[str, torch.Tensor], key: str, config: SynSegConfig) -> None:
    if key in state and state[key].shape[0] != config.reduce_dim:
        found = int(state[key].shape[0])
        raise CheckpointError(
            f"{name}: a CLIPSeg decoder with reduce_dim {found} (rd{found}), but the architecture it is converted into has "
            f"reduce_dim {config.reduce_dim}: convert an rd{config.reduce_dim} file (rd64-uni.pth, rd64-uni-refined.pth), or "
            "pass the Hugging Face folder, whose config.json names its reduce_dim"
        )


def _width_check(name: str, state: Mapping[str, torch.Tensor], key: str, model: torch.nn.Module) -> None:
    expected = model.state_dict()["image_encoder.visual.conv1.weight"].shape
    if key in state and tuple(state[key].shape) != tuple(expected):
        found = tuple(state[key].shape)
        raise CheckpointError(
            f"{name}: a CLIP image tower of width {found[0]} with {found[-1]}-px patches, but this model needs width "
            f"{expected[0]} with {expected[-1]}-px patches (CLIPSeg rd64 is built on ViT-B/16: width 768); "
            "give the matching CLIP file (e.g. OpenAI ViT-B-16.pt) or another --preset"
        )


def _load_towers_and_decoder(model: SynSeg, converted: Mapping[str, torch.Tensor], name: str) -> None:
    """Load everything but the FSS projector (training-only, CLIPSeg has none); a gap anywhere else is an error."""
    needed = {k for k in model.state_dict() if not k.startswith("projector.")}
    missing = sorted(needed - set(converted))
    if missing:
        raise CheckpointError(f"{name}: does not cover this model: {len(missing)} tensors missing, e.g. {missing[:4]}")
    load_state(model, dict(converted), name, strict=False)


def _is_refined(state: Mapping[str, torch.Tensor], head: str) -> bool:
    return f"{head}.0.weight" in state


def clipseg_from_original(clipseg_file: str | Path, clip_file: str | Path, preset: str | None = None) -> SynSeg:
    """A SynSeg that is CLIPSeg: the original repository's decoder file + the CLIP it was trained on.

    ``preset`` replaces the architecture (default: CLIPSeg rd64 on OpenAI CLIP ViT-B/16); CLIPSeg's
    preprocessing and conditioning (``CLIPSEG_INFERENCE``) are kept either way.
    """
    from synseg_core.config import get_config

    decoder, _ = read_state_dict(clipseg_file)
    if not any(k.startswith("film_mul") for k in decoder):
        if any(k.startswith("decoder.film_mul") for k in decoder):
            raise CheckpointError(f"{clipseg_file}: a Hugging Face CLIPSeg file, which holds its own CLIP: convert it without --clip")
        raise CheckpointError(
            f"{clipseg_file}: not a CLIPSeg decoder (no 'film_mul.*'); expected rd64-uni.pth / rd64-uni-refined.pth "
            "or a Hugging Face CLIPSeg folder / model.safetensors / pytorch_model.bin"
        )
    base = CLIPSEG_RD64 if preset is None else get_config(preset).to_dict()
    config = SynSegConfig.from_dict({**base, **CLIPSEG_INFERENCE, "refined_head": _is_refined(decoder, "trans_conv")})
    _reduce_dim_check(str(clipseg_file), decoder, "reduces.0.weight", config)
    model = SynSeg(config)
    clip_state, _ = read_state_dict(clip_file)
    _width_check(str(clip_file), clip_state, "visual.conv1.weight", model)
    load_clip_weights(model, clip_file)
    import_clipseg_weights(model, decoder)
    return model.eval()


def _read_huggingface(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, torch.Tensor], Path]:
    """config.json, preprocessor_config.json (each None if absent) and the weights of a Hugging Face folder or weights file."""
    import json

    if path.is_dir():
        weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
        folder = path
    else:
        weights, folder = path, path.parent
    documents = []
    for name in ("config.json", "preprocessor_config.json"):
        file = folder / name
        try:
            documents.append(json.loads(file.read_text()) if file.is_file() else None)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc
    state, _ = read_state_dict(weights)
    return documents[0], documents[1], state, weights


def from_huggingface(path: str | Path, method: str = "synseg") -> torch.nn.Module:
    """A model from a Hugging Face CLIPSeg (or, for NACLIP/ClearCLIP, CLIP) folder or weights file.

    ``method="synseg"`` gives CLIPSeg itself as a SynSeg (towers + decoder, CLIPSeg's preprocessing and
    conditioning); ``"naclip"`` / ``"clearclip"`` keep only the CLIP towers. A weights file without a
    config.json beside it is taken to be the published rd64 ViT-B/16 layout.
    """
    from synseg_core.baselines.naclip import TrainingFreeCLIP, training_free_config

    path = Path(path)
    hf, preprocessor, state, weights = _read_huggingface(path)
    kind = (hf or {}).get("model_type") or ("clipseg" if "decoder.film_mul.weight" in state else
                                             "clip" if "vision_model.embeddings.patch_embedding.weight" in state else None)
    if kind is None and "film_mul.weight" in state:
        raise CheckpointError(f"{weights}: an original-layout CLIPSeg decoder, which holds no CLIP: add --clip ViT-B-16.pt")
    if kind not in ("clipseg", "clip"):
        raise CheckpointError(
            f"{weights}: neither a CLIPSeg nor a CLIP checkpoint in the Hugging Face layout (no 'decoder.film_mul.*' or "
            "'vision_model.*' tensors); for the original CLIPSeg files use --clipseg rd64-uni.pth --clip ViT-B-16.pt"
        )
    prefix = "clip." if kind == "clipseg" else ""
    if kind == "clipseg":
        config = (clipseg_config_from_huggingface(hf, preprocessor) if hf is not None else
                  SynSegConfig.from_dict({**CLIPSEG_RD64, "refined_head": _is_refined(state, "decoder.transposed_convolution")}))
        _reduce_dim_check(str(weights), state, "decoder.reduces.0.weight", config)
    elif method == "synseg":
        raise CheckpointError(f"{weights}: a CLIP model without a CLIPSeg decoder: convert it with --method naclip or clearclip")
    else:
        config = SynSegConfig.from_dict({**CLIPSEG_RD64, **(clip_config_from_huggingface(hf) if hf else {})})
    if f"{prefix}vision_model.embeddings.patch_embedding.weight" not in state:
        raise CheckpointError(f"{weights}: holds no CLIP towers ('{prefix}vision_model.*'); convert the full CLIPSeg checkpoint")
    try:
        if method == "synseg":
            model: torch.nn.Module = SynSeg(config)
            _width_check(str(weights), state, "clip.vision_model.embeddings.patch_embedding.weight", model)
            converted, _ = clipseg_to_synseg(state)
            _load_towers_and_decoder(model, converted, str(weights))
        else:
            model = TrainingFreeCLIP(training_free_config(config, method))
            _width_check(str(weights), state, f"{prefix}vision_model.embeddings.patch_embedding.weight", model)
            load_state(model, hf_clip_to_synseg(state, prefix), str(weights))
    except KeyError as exc:
        raise CheckpointError(f"{weights}: checkpoint is missing {exc}") from exc
    return model.eval()


def from_clip(clip_file: str | Path, method: str, preset: str = "vit-b-16-openai") -> torch.nn.Module:
    """NACLIP / ClearCLIP on a CLIP weights file (OpenAI ``ViT-B-16.pt`` or an open_clip state dict)."""
    from synseg_core.baselines.naclip import TrainingFreeCLIP, training_free_config
    from synseg_core.config import get_config

    model = TrainingFreeCLIP(training_free_config(get_config(preset), method))
    state, is_openai = read_state_dict(clip_file)
    _width_check(str(clip_file), state, "visual.conv1.weight", model)
    if is_openai and not model.config.quick_gelu:
        raise CheckpointError(f"{clip_file}: OpenAI CLIP weights need QuickGELU: use --preset vit-b-16-openai")
    load_state(model, clip_to_synseg(state), str(clip_file))
    return model.eval()
