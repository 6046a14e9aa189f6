"""Distributed evaluation: 2 gloo processes under torchrun give exactly the one-process confusion matrix."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synseg_core.evaluate import main as evaluate_main


def write_random_folder(root, count=5, classes=("sky", "cat", "dog")):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for n in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "images" / f"{n}.png")
        Image.fromarray(rng.integers(0, len(classes), (40, 56), dtype=np.uint8)).save(root / "masks" / f"{n}.png")
    return root


@pytest.mark.slow  # three Python processes (launcher + 2 ranks)
def test_two_gloo_processes_reduce_to_the_single_process_confusion_matrix(tiny_checkpoint, tmp_path):
    root = write_random_folder(tmp_path / "data")  # 5 images: shards of 3 and 2
    common = ["-c", str(tiny_checkpoint), "--dataset", "folder", "--data-root", str(root), "--protocol", "synthetic", "--quiet"]
    assert evaluate_main([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "synseg_core.evaluate", *common, "--out", str(tmp_path / "two")]
    completed = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2
    assert np.array(one["confusion"]).sum() == 5 * 40 * 56
    assert two["confusion"] == one["confusion"]
    assert two["miou"] == one["miou"]
