"""SynSeg checkpoints: a directory with ``config.json`` and ``model.safetensors``.

Nothing here unpickles: weights are safetensors, the config is JSON. Every
failure raises ``CheckpointError`` naming the file and what is wrong with it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from synseg_core.config import SynSegConfig

if TYPE_CHECKING:
    import torch

    from synseg_core.model.synseg import SynSeg

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


def _atomic_write(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: SynSeg, directory: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` atomically; returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata or {}))
    _atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n"))
    return directory


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory for a directory or for its ``model.safetensors``/``config.json`` file."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_NAME, CONFIG_NAME):
        path = path.parent
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a SynSeg checkpoint directory (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
    return path


def load_config(path: str | Path) -> SynSegConfig:
    config_file = resolve_checkpoint(path) / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing; a SynSeg checkpoint holds {CONFIG_NAME} beside {WEIGHTS_NAME}")
    try:
        return SynSegConfig.from_dict(json.loads(config_file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_file}: not a valid SynSeg config: {exc}") from exc


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({exc})") from exc


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header (no tensor is read, torch is not needed)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({exc})") from exc


def read_clip_config(path: str | Path) -> dict[str, Any] | None:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) that a CLIP weights file carries in its
    safetensors metadata under "config" (benchmarks/stage1_clip.py writes it), or None for a file without one."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    text = read_safetensors_metadata(path).get("config")
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its metadata 'config' is not JSON ({exc})") from exc
    if not isinstance(config, dict) or not {"vision_cfg", "text_cfg"} <= set(config):
        raise CheckpointError(f"{path}: its metadata 'config' is not an open_clip model config (needs vision_cfg and text_cfg)")
    return config


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str, strict: bool = True) -> None:
    """Load ``state`` into ``model``; shape mismatches and (if strict) missing/unexpected keys raise one clear error."""
    expected = model.state_dict()
    problems = []
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        problems.append(f"{len(mismatched)} tensors have the wrong shape (wrong architecture?), e.g. {mismatched[:3]}")
    if strict:
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing:
            problems.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
    if problems:
        raise CheckpointError(f"{source}: does not fit this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=strict)


def _training_free(config: SynSegConfig) -> torch.nn.Module:
    """NACLIP / ClearCLIP: a checkpoint of CLIP towers whose config names the method (made by synseg_core.pretrained)."""
    from synseg_core.baselines.naclip import TrainingFreeCLIP  # the baselines import the runtime, which imports this module

    return TrainingFreeCLIP(config)


def load_model(path: str | Path, device: str | torch.device = "cpu", **overrides: object) -> SynSeg:
    """Rebuild a SynSeg (or the training-free model its config's ``method`` names) from a ``save_model`` directory (eval mode).

    ``overrides`` replace config fields before the model is built (e.g. ``fss_source="visual"`` to fine-tune
    a checkpoint with another FSS source); one that changes the architecture fails on the weights' shapes.
    """
    from synseg_core.model.synseg import SynSeg

    directory = resolve_checkpoint(path)
    config = load_config(directory)
    try:
        if overrides:
            config = SynSegConfig.from_dict({**config.to_dict(), **overrides})
        model = SynSeg(config) if config.method == "synseg" else _training_free(config)
    except ValueError as exc:
        raise CheckpointError(f"{directory / CONFIG_NAME}: {exc}") from exc
    load_state(model, read_safetensors(directory / WEIGHTS_NAME), directory / WEIGHTS_NAME)
    return model.to(device).eval()
