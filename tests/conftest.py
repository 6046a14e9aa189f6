"""Shared fixtures: small random-init models, so the suite runs on a CPU in minutes."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from synseg_core import create_model, save_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random-init SynSeg (64-px ViT, 4x4 patch grid); treat as read-only."""
    return create_model("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """``tiny_model`` saved as a checkpoint directory."""
    return save_model(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny")
