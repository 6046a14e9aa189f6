"""benchmarks/gpu_check.sh: its command line and the steps it would run (the GPU run itself needs a GPU)."""
from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_a_dry_run_lists_every_step_and_runs_nothing(tmp_path):
    result = run("--dry-run", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    steps = [line.split(":")[0].removeprefix("== ") for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == ["install", "environment", "torch", "onnx_export", "report"]
    assert "--backends torch,torch-fp16,torch-fp16-graphs --sizes 448 --classes 1,20,100 --batch 8" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.txt"]


def test_an_unknown_argument_is_refused_with_a_hint():
    result = run("--gpus", "2")
    assert result.returncode == 2 and "unknown argument '--gpus' (see --help)" in result.stderr


def test_help_describes_the_check():
    result = run("--help")
    assert result.returncode == 0 and "FP32 / FP16 / FP16 + CUDA graphs" in result.stdout
