"""Distributed evaluation: 2 gloo processes (torchrun's environment) give exactly the one-process confusion matrix;
each rank on its own GPU, the matrix reduced where the backend needs it (checked without a GPU)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

from synseg_core.checkpoint import CheckpointError
from synseg_core.evaluate import main as evaluate_main
from synseg_core.evaluation.distributed import Shard, init_from_environment, local_device, reduce_confusion, reduction_device
from synseg_core.runtime.segmenter import Segmenter


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


def test_cuda_means_the_gpu_of_the_local_rank_and_an_explicit_device_is_kept():
    assert local_device("cuda", 3) == torch.device("cuda", 3)
    assert local_device("cuda:1", 3) == torch.device("cuda", 1)
    assert local_device("cpu", 3) == torch.device("cpu")


@pytest.mark.parametrize("device, backend, expected", [("cuda", "nccl", "cuda:1"), ("cpu", "gloo", "cpu")])
def test_a_torchrun_worker_binds_its_own_gpu_and_picks_the_backend(monkeypatch, device, backend, expected):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    shard = init_from_environment(device)
    assert shard == Shard(rank=1, world_size=2, device=torch.device(expected))
    binds = [("set_device", expected)] if device == "cuda" else []
    assert calls == [*binds, ("init", backend)]  # the GPU is bound before NCCL starts


def test_nccl_reduces_on_the_rank_gpu_and_gloo_on_the_cpu():
    gpu = torch.device("cuda", 1)
    assert reduction_device("nccl", gpu) == gpu
    assert reduction_device("gloo", gpu) == torch.device("cpu")


def test_the_confusion_matrix_is_reduced_on_the_backend_device(monkeypatch):
    reduced_on = []

    def two_equal_ranks(tensor, op):
        reduced_on.append(tensor.device)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", two_equal_ranks)
    confusion = np.array([[3, 1], [0, 2]], np.int64)
    total = reduce_confusion(confusion, Shard(rank=0, world_size=2, device=torch.device("meta")))
    assert reduced_on == [torch.device("cpu")]
    assert total.dtype == np.int64 and total.tolist() == [[6, 2], [0, 4]]


def test_device_cuda_runs_the_model_on_the_gpu_of_the_local_rank(monkeypatch, tmp_path):
    root = write_random_folder(tmp_path / "data", count=1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    devices = []

    def record(path, backend, device, precision):
        devices.append(device)
        raise CheckpointError("stop here: no GPU needed to see the device")

    monkeypatch.setattr(Segmenter, "from_checkpoint", record)
    args = ["-c", str(tmp_path), "--dataset", "folder", "--data-root", str(root), "--device", "cuda", "--quiet"]
    assert evaluate_main(args) == 2
    assert devices == ["cuda:1"]
