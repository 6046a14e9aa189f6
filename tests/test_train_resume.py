"""Exact resume: a run SIGKILLed mid-training, just after a chosen checkpoint appeared, and resumed with
--resume ends with exactly the weights of an uninterrupted run (CPU, tiny model)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from synseg_core.checkpoint import read_safetensors
from synseg_core.data.synthetic import write_synthetic_dataset
from synseg_core.train import main
from synseg_core.training.config import CONFIG_DIR
from synseg_core.training.state import checkpoint_name, list_checkpoints

REPO = Path(__file__).resolve().parent.parent
STEPS = 12
KILL_AFTER = checkpoint_name(4)  # killed as soon as this checkpoint is published: 8 steps short of the end


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(uninterrupted run, killed-then-resumed run) of the same config."""
    root = tmp_path_factory.mktemp("resume")
    scenes = write_synthetic_dataset(root / "scenes", num=12, seed=1, size=64, progress=False)
    args = ["--config", str(CONFIG_DIR / "tiny.yaml"), f"data.train={scenes / 'captions.jsonl'}", f"train.steps={STEPS}",
            "train.batch_size=4", "train.ckpt_every=2", "train.log_every=2", "train.progress=false"]
    assert main([*args, "--out", str(root / "straight")]) == 0

    killed = root / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-m", "synseg_core.train", *args, "--out", str(killed)], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120

    def published() -> bool:  # a later name counts too: KILL_AFTER may already be pruned
        return any(path.name >= KILL_AFTER for path in list_checkpoints(killed))

    while not published() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert published()
    assert not (killed / "model").exists()

    assert main(["--out", str(killed), "--resume"]) == 0
    return root / "straight", killed


def test_resumed_run_ends_with_the_uninterrupted_weights(runs):
    straight, resumed = (read_safetensors(run / "model" / "model.safetensors") for run in runs)
    assert straight.keys() == resumed.keys()
    different = [name for name in straight if not torch.equal(straight[name], resumed[name])]
    assert different == []


def test_resumed_run_leaves_no_half_written_checkpoint(runs):
    checkpoints = runs[1] / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == f"step_{STEPS:06d}"
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith(".")] == []


def test_resumed_run_keeps_one_metrics_record_per_log_step(runs):
    steps = [line.split(",")[0] for line in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    assert steps == [f'{{"step": {s}' for s in range(2, STEPS + 1, 2)]
