"""The torch-free deployment: what a robot installs with ``pip install .[deploy,ros]``, and no PyTorch.

scripts/run_tests.sh makes the fixtures in the torch venv (tests/deploy/make_fixtures.py: the bundled demo
model, its ONNX export with the text tower, and the torch backend's labels on the bundled samples), builds
.venv-deploy and runs these tests there with SYNSEG_DEPLOY_FIXTURES naming the fixtures folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "synseg_core" / "assets" / "samples"


@dataclass(frozen=True)
class Fixtures:
    checkpoint: Path  # the demo model (config.json + model.safetensors)
    export: Path  # its FP32 ONNX export, text tower included
    vocabulary: list[str]
    threshold: float  # the torch backend's threshold and template set for the expected labels
    template_set: str
    samples: list[Path]
    expected: dict[str, np.ndarray]  # sample name -> the torch backend's labels, int32 [H, W], -1 = unlabeled


@pytest.fixture(scope="session")
def fixtures() -> Fixtures:
    folder = os.environ.get("SYNSEG_DEPLOY_FIXTURES")
    if not folder:
        pytest.skip("the torch-free deployment tests run in scripts/run_tests.sh's .venv-deploy step "
                    "(SYNSEG_DEPLOY_FIXTURES, made by tests/deploy/make_fixtures.py in the torch venv, is not set)")
    root = Path(folder)
    meta = json.loads((root / "fixtures.json").read_text())
    samples = [SAMPLES / name for name in meta["samples"]]
    return Fixtures(
        checkpoint=root / "checkpoint", export=root / "export", vocabulary=meta["vocabulary"], samples=samples,
        threshold=meta["threshold"], template_set=meta["template_set"],
        expected={p.name: np.load(root / "expected" / f"{p.stem}.npy") for p in samples},
    )


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
