"""Model configuration: architecture as data, saved beside every checkpoint as JSON."""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # CLIPSeg's preprocessing
IMAGENET_STD = (0.229, 0.224, 0.225)
TEXT_EMBEDDINGS = ("normalized", "raw")
METHODS = ("synseg", "naclip", "clearclip")


@dataclass
class SynSegConfig:
    """Everything needed to rebuild a SynSeg model (weights excluded).

    ``clip_model`` names an open_clip architecture; ``clip_config`` optionally
    replaces it with an inline open_clip model config (``embed_dim``,
    ``vision_cfg``, ``text_cfg``), which is how small test and benchmark
    models are described without registering them globally.

    ``text_embedding`` is what conditions FiLM: ``"normalized"`` (the paper's SynSeg: the L2-normalised
    prompt-ensemble embedding) or ``"raw"`` (CLIPSeg's training: the unnormalised text feature, averaged
    over the templates). ``method`` names the network the checkpoint holds: ``"synseg"`` (CLIP + decoder)
    or a training-free rival on the CLIP towers alone (``"naclip"``, ``"clearclip"``). ``source`` records
    where converted weights came from (repository, revision, file sha256). ``resize_antialias`` resizes
    images to the input size with PIL's antialiased bilinear filter (CLIPSeg's processor) instead of
    OpenCV's plain bilinear one.
    """

    clip_model: str = "ViT-B-16"
    clip_config: dict[str, Any] | None = None
    quick_gelu: bool = False
    extract_layers: tuple[int, ...] = (3, 7, 9)
    reduce_dim: int = 64
    decoder_heads: int = 4
    decoder_ffn_dim: int = 2048
    decoder_dropout: float = 0.1
    refined_head: bool = False
    cond_layer: int = 0
    cond_scale: float = 1.0
    text_embedding: str = "normalized"
    projector_hidden: int = 0
    fss_source: str = "conditional"
    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    resize_antialias: bool = False
    prompt_set: str = "tcl"
    threshold: float = 0.5
    background_threshold: float = 0.4
    method: str = "synseg"
    source: dict[str, Any] | None = None
    version: int = 1

    def __post_init__(self) -> None:
        check_field_types(self)
        self.extract_layers = tuple(int(i) for i in self.extract_layers)
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if not self.extract_layers:
            raise ValueError("extract_layers must name at least one image-encoder block")
        if list(self.extract_layers) != sorted(set(self.extract_layers)):
            raise ValueError(f"extract_layers must be strictly increasing, got {self.extract_layers}")
        if not 0 <= self.cond_layer < len(self.extract_layers):
            raise ValueError(f"cond_layer {self.cond_layer} outside 0..{len(self.extract_layers) - 1}")
        if self.fss_source not in ("conditional", "visual"):
            raise ValueError(f"fss_source must be 'conditional' or 'visual', got {self.fss_source!r}")
        if self.text_embedding not in TEXT_EMBEDDINGS:
            raise ValueError(f"text_embedding must be one of {TEXT_EMBEDDINGS}, got {self.text_embedding!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.reduce_dim % self.decoder_heads:
            raise ValueError(f"reduce_dim {self.reduce_dim} not divisible by decoder_heads {self.decoder_heads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynSegConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SynSeg config keys: {unknown}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SynSegConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a (JSON-decoded) value fits a type annotation; JSON lists stand for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits_type(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return all(fits_type(v, args[0]) for v in value) if args else True
        return len(value) == len(args) and all(fits_type(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        return isinstance(value, dict) and all(fits_type(k, args[0]) and fits_type(v, args[1]) for k, v in value.items())
    return isinstance(value, origin or hint)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_field_types(instance: Any) -> None:
    """Raise ValueError naming the field, its type and the value for every dataclass field of the wrong type."""
    hints = _field_types(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if not fits_type(value, hints[f.name]):
            raise ValueError(f"config field {f.name!r} must be {f.type}, got {value!r} ({type(value).__name__})")


# A ViT small enough for unit tests and the CPU benchmark: 64-px input, 4x4 patch grid.
TINY_CLIP = {
    "embed_dim": 64,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}

PRESETS: dict[str, SynSegConfig] = {
    "vit-b-16": SynSegConfig(),
    "vit-b-16-openai": SynSegConfig(clip_model="ViT-B-16", quick_gelu=True),
    "tiny": SynSegConfig(
        clip_model="tiny",
        clip_config=TINY_CLIP,
        extract_layers=(1, 2, 3),
        reduce_dim=16,
        decoder_heads=2,
        decoder_ffn_dim=64,
        image_size=64,
    ),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_config(name_or_config: str | SynSegConfig | dict[str, Any]) -> SynSegConfig:
    """Resolve a preset name, a dict or a config into a fresh ``SynSegConfig``."""
    if isinstance(name_or_config, SynSegConfig):
        return dataclasses.replace(name_or_config)
    if isinstance(name_or_config, dict):
        return SynSegConfig.from_dict(name_or_config)
    if name_or_config not in PRESETS:
        raise ValueError(f"unknown model preset {name_or_config!r}; choose one of {list_presets()}")
    return dataclasses.replace(PRESETS[name_or_config])
