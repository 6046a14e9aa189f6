"""Distributed evaluation: 2 gloo processes (torchrun's environment) give exactly the one-process confusion matrix."""
import json
import os
import socket
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


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # two more Python processes
def test_two_gloo_processes_reduce_to_the_single_process_confusion_matrix(tiny_checkpoint, tmp_path):
    root = write_random_folder(tmp_path / "data")  # 5 images: shards of 3 and 2
    common = ["-c", str(tiny_checkpoint), "--dataset", "folder", "--data-root", str(root), "--protocol", "synthetic", "--quiet"]
    assert evaluate_main([*common, "--out", str(tmp_path / "one")]) == 0
    # The environment torchrun gives its workers (env:// rendezvous), without the launcher process.
    world = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "synseg_core.evaluate", *common, "--out", str(tmp_path / "two")]
    ranks = [subprocess.Popen(command, env={**os.environ, **world, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    try:
        errors = [rank.communicate(timeout=300)[1] for rank in ranks]
    finally:
        for rank in ranks:  # a rank whose peer died waits in the rendezvous forever
            if rank.poll() is None:
                rank.kill()
    assert [rank.returncode for rank in ranks] == [0, 0], errors
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["world_size"] == 2
    assert np.array(one["confusion"]).sum() == 5 * 40 * 56
    assert two["confusion"] == one["confusion"]
    assert two["miou"] == one["miou"]
