"""Training configuration: YAML files with ``base:`` inheritance and dotted ``key=value`` overrides.

A config file is a mapping with the sections ``model``, ``data``, ``loss``,
``optim`` and ``train`` and the top-level ``out``. ``base: other.yaml`` (a path
relative to the file) inherits another file; the later value wins, and nested
mappings merge key by key. Command-line overrides use dotted keys and YAML
values (``train.steps=200 loss.weights.sep=0 data.train=data/train.jsonl``).

Every key is checked against the dataclasses below, so a typo fails at start-up
with the list of valid keys instead of being silently ignored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILE = "config.yaml"  # the resolved config, in every run directory


class ConfigError(ValueError):
    """A config file or override is missing, malformed or names an unknown key."""


class RunDirError(RuntimeError):
    """The output directory cannot be used as asked (an existing run without --resume, ...)."""


@dataclass
class ModelSection:
    preset: str = "tiny"  # a SynSeg preset (synseg_core.config.list_presets())
    overrides: dict[str, Any] = field(default_factory=dict)  # SynSegConfig fields replaced on top of the preset (or of init's config)
    clip_weights: str | None = None  # open_clip / OpenAI CLIP checkpoint file loaded into the frozen towers
    clipseg_weights: str | None = None  # CLIPSeg decoder weights (rd64-uni*.pth or Hugging Face layout)
    init: str | None = None  # a SynSeg checkpoint directory to start from (replaces preset and weights; overrides still apply)


@dataclass
class DataSection:
    train: str | None = None  # JSONL manifest, or webdataset shards: paths, globs, brace patterns ("shards/{00000..00099}.tar"), http(s) URLs, "pipe:CMD"
    image_size: int | None = None  # training resolution; None = the model's config.image_size
    max_categories: int = 8  # categories kept per caption (the first ones in the caption)
    category_backend: str = "rules"  # "rules" | "spacy" | "auto"; pinned so runs are reproducible
    stop_words: list[str] | None = None  # replaces the extractor's built-in stop-list (None: keep it)
    extra_stop_words: list[str] = field(default_factory=list)  # added to the stop-list (built-in or stop_words)
    template_set: str = "single"  # prompt templates for the training category embeddings
    num_workers: int = 2  # DataLoader worker processes per rank


@dataclass
class LossSection:
    name: str = "mccl"  # "mccl" (the paper) | "single_infonce" (caption-level contrastive baseline)
    weights: dict[str, float] = field(default_factory=lambda: {"align": 1.0, "cont": 1.0, "back": 1.0, "sep": 1.0})
    temperature: float = 0.07  # single_infonce only: fixed softmax temperature (CLIP's initial value)


@dataclass
class OptimSection:
    lr: float = 1e-3
    min_lr: float = 1e-4  # end of the cosine decay
    weight_decay: float = 0.05
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class TrainSection:
    steps: int = 1000  # optimiser steps
    batch_size: int = 16  # GLOBAL batch (images per step over all ranks); each rank takes batch_size / world_size
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    amp: str = "bf16"  # CUDA only: "bf16" | "fp16" (with a GradScaler) | "none"; the CPU always runs float32
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA if present) | "cpu" | "cuda"
    log_every: int = 10  # steps between metric records
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass
class TrainingConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    out: str = "runs/synseg"

    def __post_init__(self) -> None:
        problems = []
        if self.loss.name not in ("mccl", "single_infonce"):
            problems.append(f"loss.name must be 'mccl' or 'single_infonce', got {self.loss.name!r}")
        unknown_terms = sorted(set(self.loss.weights) - {"align", "cont", "back", "sep"})
        if unknown_terms:
            problems.append(f"loss.weights has unknown terms {unknown_terms}; the MCCL terms are align, cont, back, sep")
        if self.train.amp not in ("bf16", "fp16", "none"):
            problems.append(f"train.amp must be 'bf16', 'fp16' or 'none', got {self.train.amp!r}")
        if self.train.device not in ("auto", "cpu", "cuda"):
            problems.append(f"train.device must be 'auto', 'cpu' or 'cuda', got {self.train.device!r}")
        for name, value in (("train.steps", self.train.steps), ("train.batch_size", self.train.batch_size),
                            ("train.log_every", self.train.log_every), ("train.ckpt_every", self.train.ckpt_every),
                            ("train.keep_checkpoints", self.train.keep_checkpoints),
                            ("data.max_categories", self.data.max_categories)):
            if value < 1:
                problems.append(f"{name} must be >= 1, got {value}")
        if self.data.num_workers < 0:
            problems.append(f"data.num_workers must be >= 0, got {self.data.num_workers}")
        if self.optim.warmup_steps < 0 or self.optim.lr <= 0 or not 0 <= self.optim.min_lr <= self.optim.lr:
            problems.append("optim needs lr > 0, 0 <= min_lr <= lr and warmup_steps >= 0")
        if self.loss.temperature <= 0:
            problems.append(f"loss.temperature must be > 0, got {self.loss.temperature}")
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["optim"]["betas"] = list(self.optim.betas)  # YAML has no tuples
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, recursing into section dataclasses; unknown keys raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config keys {[prefix + k for k in unknown]}; valid keys here: {sorted(names)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key)  # type: ignore[arg-type]
        else:
            values[name] = _coerce(value, hint, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check a leaf against its annotation; ints and numeric strings are accepted for floats, lists for tuples.

    List items are checked one by one (``data.extra_stop_words[2]: expected str, got 3``).
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict) and isinstance(value, origin):
            return value
        if origin is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(float(v) for v in value)
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "overrides":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict with its ``base:`` chain resolved (no validation yet)."""
    path = Path(path)
    if not path.is_file():
        packaged = CONFIG_DIR / path.name
        hint = f"; a packaged config of that name exists: {packaged}" if packaged.is_file() else ""
        raise ConfigError(f"{path}: no such config file{hint}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base:' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(read_yaml(path.parent / base, (*_seen, path.resolve())), data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested dict; returns a new dict."""
    result = _merge({}, data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.steps=200)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return result


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainingConfig:
    """Resolve a YAML file (or the defaults when ``path`` is None) plus overrides into a validated config."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


def config_from_dict(data: dict[str, Any]) -> TrainingConfig:
    try:
        return _build(TrainingConfig, data, "")
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def changed_keys(old: TrainingConfig, new: TrainingConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""

    def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and key != "overrides":
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    before, after = flatten(old.to_dict()), flatten(new.to_dict())
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
