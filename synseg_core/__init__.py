"""synseg_core: the SynSeg library (model, MCCL training, evaluation, export, inference). Never imports ROS.

Importing the package does not import torch: the torch-only names (``SynSeg``, ``create_model``) load
their module on first use (PEP 562), so a robot running an ONNX Runtime or TensorRT export needs no torch.
"""
import importlib

#: what to install where PyTorch is needed (training, export, the torch backend) and missing; set before the
#: imports below, which may use it
INSTALL_TORCH = "pip install 'synseg[torch]'"

# ruff: noqa: E402
from synseg_core.checkpoint import CheckpointError, load_model, save_model
from synseg_core.config import SynSegConfig, get_config, list_presets
from synseg_core.runtime import UNLABELED, Segmentation, Segmenter

__version__ = "0.1.0"

_TORCH_NAMES = {"SynSeg": "synseg_core.model.synseg", "create_model": "synseg_core.model.synseg"}

__all__ = [
    "INSTALL_TORCH", "UNLABELED", "CheckpointError", "Segmentation", "Segmenter", "SynSeg", "SynSegConfig", "create_model", "get_config", "list_presets", "load_model",
    "save_model", "__version__",
]


def __getattr__(name: str) -> object:
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module 'synseg_core' has no attribute {name!r}")
    try:
        module = importlib.import_module(_TORCH_NAMES[name])
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ImportError(f"synseg_core.{name} needs PyTorch: {INSTALL_TORCH}") from exc
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
