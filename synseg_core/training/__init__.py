"""MCCL training: YAML configs, the training loop, checkpoints with exact resume, data-parallel helpers."""
from synseg_core.training.config import ConfigError, TrainingConfig, load_config
from synseg_core.training.trainer import train

__all__ = ["ConfigError", "TrainingConfig", "load_config", "train"]
