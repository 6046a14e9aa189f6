"""Training objectives."""
from synseg_core.losses.mccl import MCCLWeights, mccl_loss, total_loss

__all__ = ["MCCLWeights", "mccl_loss", "total_loss"]
