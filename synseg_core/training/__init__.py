"""MCCL training: YAML configs, the training loop, checkpoints with exact resume, data-parallel helpers.

``train`` loads the torch training loop on first use (PEP 562), so reading and checking a config (and
``python -m synseg_core.train --help`` / ``--print-config``) does not import torch.
"""
import importlib

from synseg_core.training.config import ConfigError, TrainingConfig, load_config

__all__ = ["ConfigError", "TrainingConfig", "load_config", "train"]


def __getattr__(name: str) -> object:
    if name != "train":
        raise AttributeError(f"module 'synseg_core.training' has no attribute {name!r}")
    value = importlib.import_module("synseg_core.training.trainer").train
    globals()[name] = value  # later look-ups skip this function
    return value
