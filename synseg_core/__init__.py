"""synseg_core: the SynSeg library (model, MCCL training, evaluation, export, inference). Never imports ROS."""
from synseg_core.checkpoint import CheckpointError, load_model, save_model
from synseg_core.config import SynSegConfig, get_config, list_presets
from synseg_core.model import SynSeg, create_model
from synseg_core.runtime import UNLABELED, Segmentation, Segmenter

__version__ = "0.1.0"

__all__ = [
    "UNLABELED", "CheckpointError", "Segmentation", "Segmenter", "SynSeg", "SynSegConfig", "create_model", "get_config", "list_presets", "load_model",
    "save_model", "__version__",
]
