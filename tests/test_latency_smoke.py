"""benchmarks/latency.py runs end to end on a tiny model and reports every ratio docs/PERFORMANCE.md quotes."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"


@pytest.fixture(scope="module")
def latency():
    spec = importlib.util.spec_from_file_location("latency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["latency"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("latency")


@pytest.fixture(scope="module")
def report(latency, work):
    args = [
        "--preset", "tiny", "--sizes", "64", "--classes", "1,20", "--repeats", "1", "--warmup", "0", "--threads", "2",
        "--backends", "torch,onnxruntime", "--exporter", "legacy", "--no-memory", "--work-dir", str(work), "--out", str(work / "results"),
        "--e2e-classes", "1,20",
    ]
    assert latency.main(args) == 0
    return json.loads((work / "results.json").read_text()), (work / "results.md").read_text()


def test_every_backend_size_and_k_gets_a_row(report):
    rows = report[0]["rows"]
    assert {(r["backend"], r["size"], r["classes"]) for r in rows} == {
        ("torch", "64x64", 1), ("torch", "64x64", 20), ("onnxruntime", "64x64", 1), ("onnxruntime", "64x64", 20),
    }
    assert all(r["latency_ms"] > 0 and r["encoder_ms"] > 0 and r["fps"] > 0 for r in rows)


def test_report_holds_the_ratios_the_targets_are_stated_in(report):
    ratios = report[0]["ratios"]
    assert set(ratios["full_over_encoder"]) == {"torch 64x64", "onnxruntime 64x64"}
    assert set(ratios["k_high_over_k_low"]) == {"torch 64x64", "onnxruntime 64x64"}
    assert set(ratios["onnxruntime_speedup_over_torch"]) == {"64x64 K=1", "64x64 K=20"}


def test_vocabulary_change_is_timed_cold_and_warm(report):
    timing = report[0]["vocabulary"]["torch (cpu)"]
    assert timing["prompts"] == 20 * 9
    assert timing["cold_ms"] > timing["warm_ms"]


def test_markdown_names_each_target(report):
    text = report[1]
    for phrase in ("target <= 1.25", "target <= 1.5", "target >= 1.5", "cold", "End-to-end per frame", "onnxruntime vs torch"):
        assert phrase in text


def test_end_to_end_rows_hold_the_network_alone_the_share_and_the_bytes_from_the_device(report):
    e2e = report[0]["end_to_end"]
    assert set(e2e) == {"torch 64x64 K=1", "torch 64x64 K=20", "onnxruntime 64x64 K=1", "onnxruntime 64x64 K=20"}
    row = e2e["onnxruntime 64x64 K=20"]
    assert row["total"] > 0 and row["network_alone"] > 0
    assert row["pre_post_share"] == pytest.approx(1 - row["network_alone"] / row["total"], abs=1e-3)
    assert (row["device_bytes_now"], row["device_bytes_before"]) == (480 * 640 * 8, 20 * 64 * 64 * 4)
    assert set(row) >= {"preprocess", "infer", "postprocess"}


def test_the_benchmark_runs_the_products_torch_backend(latency, tiny_model):
    args = latency.parse_args(["--preset", "tiny", "--sizes", "64", "--backends", "torch"])
    backend = latency.make_backend("torch", tiny_model, (64, 64), args)
    assert type(backend).__module__ == "synseg_core.runtime.torch_backend" and backend.cuda_graphs is False
    assert not hasattr(latency, "CudaGraphBackend")


def test_memory_probe_reports_working_memory_per_vocabulary_size(latency, work, report, tiny_model):
    args = latency.parse_args(
        ["--preset", "tiny", "--sizes", "64", "--classes", "1,20,300", "--exporter", "legacy", "--work-dir", str(work), "--memory-probe", "onnxruntime"]
    )
    growth = latency.memory_probe(tiny_model, args)
    assert list(growth) == [1, 20, 300]
    assert 0 <= growth[1] <= growth[20] <= growth[300]
    assert growth[300] > 0  # 300 classes x 64x64 float32 logits alone are 4.7 MB
