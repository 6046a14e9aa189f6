"""Without PyTorch installed: the deployment modules import, and an ONNX export segments like the torch backend."""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO, read_rgb

# The modules a robot imports (COMMON contract): none may need torch.
DEPLOYMENT_MODULES = [
    "synseg_core", "synseg_core.config", "synseg_core.checkpoint", "synseg_core.text.prompts", "synseg_core.visualize",
    "synseg_core.segment", "synseg_core.runtime", "synseg_core.runtime.backend", "synseg_core.runtime.processing",
    "synseg_core.runtime.segmenter", "synseg_core.runtime.onnx_backend", "synseg_core.runtime.onnx_text",
    "synseg_core.runtime.engine_cache", "synseg_core.runtime.tensorrt_backend", "synseg_ros",
]


def test_this_venv_has_no_torch(fixtures):
    assert importlib.util.find_spec("torch") is None
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("torch")


@pytest.mark.parametrize("module", DEPLOYMENT_MODULES)
def test_deployment_module_imports_without_torch(fixtures, module):
    # A fresh interpreter each: a failed import would leave its submodules behind in this one.
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_torch_only_names_say_what_to_install(fixtures):
    import synseg_core

    with pytest.raises(ImportError, match=r"needs PyTorch: pip install 'synseg\[torch\]'"):
        synseg_core.create_model  # noqa: B018


def test_segmenter_over_the_export_labels_the_samples_as_the_torch_backend(fixtures):
    from synseg_core.runtime.segmenter import Segmenter

    segmenter = Segmenter.from_export(fixtures.export)
    for path in fixtures.samples:
        labels = segmenter.segment(read_rgb(path), fixtures.vocabulary).labels
        np.testing.assert_array_equal(labels, fixtures.expected[path.name], err_msg=path.name)
    assert len(np.unique(np.concatenate([e.ravel() for e in fixtures.expected.values()]))) > 3  # not a blank answer


def test_segment_cli_on_the_export_writes_the_torch_backends_labels(fixtures, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "synseg_core.segment", *map(str, fixtures.samples), "--export", str(fixtures.export),
               "--backend", "onnxruntime", "--vocabulary", ",".join(fixtures.vocabulary), "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    for path in fixtures.samples:
        written = cv2.imread(str(out / f"{path.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(written, np.where(fixtures.expected[path.name] < 0, 255, fixtures.expected[path.name]))
        assert json.loads((out / f"{path.stem}_labels.json").read_text())["labels"]["0"] == fixtures.vocabulary[0]


def test_segment_cli_with_the_torch_backend_says_what_to_install(fixtures, tmp_path):
    command = [sys.executable, "-m", "synseg_core.segment", str(fixtures.samples[0]), "--checkpoint", str(fixtures.checkpoint),
               "--backend", "torch", "--vocabulary", "sky", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2
    assert "pip install 'synseg[torch]'" in done.stderr and "--export" in done.stderr
