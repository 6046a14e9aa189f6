"""Baselines measured on the same data, backbone and evaluation code as SynSeg."""
from synseg_core.baselines.maskclip import MaskCLIP

__all__ = ["MaskCLIP"]
