"""Training checkpoints: atomic step directories, a ``latest`` pointer, and exact resume.

Layout under ``RUN_DIR/checkpoints/``::

    step_000500/            one checkpoint (a directory renamed into place only once complete)
      config.json           }  the model, as ``save_model`` writes it (loadable by ``load_model``)
      model.safetensors     }
      optimizer.pt          AdamW and GradScaler state (torch.save; read with weights_only=True)
      trainer_state.json    step, data-stream position, counters
      train_config.yaml     the training config that produced it
    latest                  the name of the newest complete checkpoint (replaced atomically)

A process killed at any moment leaves either the previous checkpoint or the new
one, never half of one: files are written into a hidden temporary directory,
flushed to disk, and the directory is renamed to its final name before
``latest`` moves. Resuming reads the newest ``step_*`` directory, not the one
``latest`` names: a process killed between the rename and the pointer update
leaves a complete checkpoint that ``latest`` does not name yet. A checkpoint
that turns out unreadable is skipped for the next older one.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synseg_core.checkpoint import (
    WEIGHTS_NAME,
    CheckpointError,
    _atomic_write,
    load_config,
    load_state,
    read_safetensors,
    save_model,
)
from synseg_core.config import SynSegConfig
from synseg_core.model.synseg import SynSeg

log = logging.getLogger("synseg.train")

CHECKPOINTS = "checkpoints"
LATEST = "latest"
OPTIMIZER_NAME = "optimizer.pt"
STATE_NAME = "trainer_state.json"
CONFIG_NAME = "train_config.yaml"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def _fsync_tree(directory: Path) -> None:
    """Flush every file of ``directory`` and the directory itself, so the rename publishes durable data."""
    for path in directory.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: SynSeg,
    training: dict[str, Any],
    trainer_state: dict[str, Any],
    config_yaml: str,
    keep: int,
) -> Path:
    """Write ``checkpoints/step_<step>/`` atomically, point ``latest`` at it, prune to the newest ``keep``.

    training: state dicts ``{"optimizer", "scaler"}`` (the LR is a function of the step, not state).
    trainer_state: JSON-serialisable (step, data position, counters).
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tmp, metadata={"step": str(step)})
    torch.save(training, tmp / OPTIMIZER_NAME)
    (tmp / STATE_NAME).write_text(json.dumps({**trainer_state, "step": step}, indent=2) + "\n")
    (tmp / CONFIG_NAME).write_text(config_yaml)
    _fsync_tree(tmp)
    if final.exists():  # left by an earlier attempt that got past this step and was resumed from before it
        stale = root / f".stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale)
    else:
        os.replace(tmp, final)
    mark_latest(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def mark_latest(checkpoint: Path) -> None:
    """Point ``latest`` (replaced atomically) at ``checkpoint``, a ``step_*`` directory."""
    _atomic_write(checkpoint.parent / LATEST, lambda path: Path(path).write_text(checkpoint.name + "\n"))


def remove_temporaries(run_dir: Path) -> None:
    """Delete what a killed process left half-written: checkpoint directories, and the temporary files of
    atomic writes (``latest``, metrics.jsonl, config.yaml)."""
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith((".tmp-", ".stale-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
                path.unlink(missing_ok=True)


@dataclass
class Checkpoint:
    """One training checkpoint, read completely."""

    directory: Path
    config: SynSegConfig
    tensors: dict[str, torch.Tensor]
    training: dict[str, Any]  # {"optimizer", "scaler"} state dicts
    trainer_state: dict[str, Any]  # step, data position, counters


def read_checkpoint(directory: Path) -> Checkpoint:
    """Every file of one checkpoint; CheckpointError if any is missing, unreadable or from another step."""
    config = load_config(directory)
    tensors = read_safetensors(directory / WEIGHTS_NAME)
    state_file = directory / STATE_NAME
    try:
        trainer_state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{state_file}: unreadable trainer state ({exc})") from exc
    step = trainer_state.get("step") if isinstance(trainer_state, dict) else None
    if not isinstance(step, int) or directory.name != checkpoint_name(step):
        raise CheckpointError(f"{state_file}: does not hold the state of {directory.name}")
    optimizer_file = directory / OPTIMIZER_NAME
    try:
        training = torch.load(optimizer_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for truncated or foreign files
        raise CheckpointError(f"{optimizer_file}: unreadable optimiser state ({exc})") from exc
    return Checkpoint(directory, config, tensors, training, trainer_state)


def find_resumable(run_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint of a run, by step (whatever ``latest`` names), or None."""
    for candidate in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(candidate)
        except CheckpointError as exc:
            log.warning("cannot resume from %s (%s); trying an older checkpoint", candidate, exc)
    return None


def restore_model(model: SynSeg, tensors: dict[str, torch.Tensor], source: Path) -> None:
    load_state(model, tensors, source / WEIGHTS_NAME)
