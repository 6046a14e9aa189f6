"""TensorRT backend: engine cache and profiles everywhere; the engines themselves only where TensorRT runs.

No machine of this project can install TensorRT, so the runtime tests skip with that reason; the backend's
use of the TensorRT API is type-checked in CI instead (scripts/prepare_tensorrt_stubs.sh + mypy).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from synseg_core import Segmenter
from synseg_core.export import export_onnx
from synseg_core.runtime.engine_cache import EngineCache, EngineError, EngineKey, read_engine, write_engine
from synseg_core.runtime.export_format import read_export
from synseg_core.runtime.factory import user_cache_dir
from synseg_core.runtime.onnx_backend import OnnxBackend
from synseg_core.runtime.tensorrt_backend import TensorRTBackend, engine_profiles, main, tensorrt_available

HAS_TENSORRT = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(
    not (HAS_TENSORRT and torch.cuda.is_available()), reason="TensorRT and a CUDA GPU are not available on this machine"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("trt") / "export"
    export_onnx(tiny_model, out, exporter="legacy", check=False)
    return out


def _key(**changes):
    fields = {
        "onnx_sha256": "ab" * 32, "tensorrt_version": "10.13.0", "gpu": "NVIDIA H200 (sm_90)", "precision": "fp16",
        "shapes": {"text": [[1, 64], [20, 64], [256, 64]]}, "workspace_bytes": 1 << 30,
    }
    return EngineKey(**{**fields, **changes})


class FakeBuilder:
    """Stands in for a TensorRT build: counts calls, returns recognisable bytes."""

    def __init__(self, payload=b"engine-bytes"):
        self.calls = 0
        self.payload = payload

    def __call__(self):
        self.calls += 1
        return self.payload + bytes([self.calls])


def test_module_imports_without_tensorrt():
    assert TensorRTBackend.name == "tensorrt"


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_backend_says_what_to_install_when_tensorrt_is_missing(exported):
    with pytest.raises(ImportError, match="needs NVIDIA TensorRT 10"):
        TensorRTBackend(exported)


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_segmenter_fails_fast_without_tensorrt_and_exports_nothing(tmp_path, tiny_model, monkeypatch):
    from synseg_core import save_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    with pytest.raises(ImportError, match="TensorRT"):
        Segmenter.from_checkpoint(checkpoint, backend="tensorrt", device="cuda", precision="fp16")
    assert not user_cache_dir().exists()


def test_a_cpu_device_is_refused_with_a_hint():
    from synseg_core.runtime.tensorrt_backend import check_device

    with pytest.raises(ValueError, match="runs on a CUDA device, not 'cpu'"):
        check_device("cpu")


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_prebuild_command_fails_with_a_message_without_tensorrt(exported, caplog):
    assert main([str(exported)]) == 1
    assert "needs NVIDIA TensorRT" in caplog.text


def test_prebuild_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "--max-classes 256" in text and "python -m synseg_core.export" in text


def test_profiles_cover_batch_and_vocabulary_size(exported):
    profiles = engine_profiles(read_export(exported), max_batch=4, opt_classes=20, max_classes=256)
    assert profiles["image_encoder"] == {"pixels": [[1, 3, 64, 64], [1, 3, 64, 64], [4, 3, 64, 64]]}
    assert profiles["decoder"]["text"] == [[1, 64], [20, 64], [256, 64]]
    assert profiles["decoder"]["act0"] == [[1, 17, 96], [1, 17, 96], [4, 17, 96]]
    assert profiles["postprocess"]["logits"] == [[1, 1, 64, 64], [1, 20, 64, 64], [4, 256, 64, 64]]
    assert profiles["postprocess"]["size"] == [[1, 1], [480, 640], [4096, 4096]]  # values of the shape input
    assert profiles["postprocess"]["map_classes"] == [[0], [0], [256]]  # 0, or K when class maps are asked for
    assert sorted(profiles["decoder"]) == ["act0", "act1", "act2", "text"]


def test_profile_needs_opt_classes_within_the_maximum(exported):
    with pytest.raises(ValueError, match="opt_classes <= max_classes"):
        engine_profiles(read_export(exported), max_batch=1, opt_classes=300, max_classes=256)


def test_cache_builds_once_then_reuses(tmp_path):
    cache, build = EngineCache(tmp_path), FakeBuilder()
    first = cache.load_or_build("decoder", _key(), build)
    assert cache.load_or_build("decoder", _key(), build) == first
    assert build.calls == 1


@pytest.mark.parametrize("change", [{"gpu": "NVIDIA GeForce RTX 4090 (sm_89)"}, {"tensorrt_version": "10.14.1"}, {"precision": "fp32"}])
def test_another_gpu_tensorrt_version_or_precision_gets_its_own_engine(tmp_path, change):
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.load_or_build("decoder", _key(), build)
    cache.load_or_build("decoder", _key(**change), build)
    assert build.calls == 2
    assert cache.path("decoder", _key()) != cache.path("decoder", _key(**change))


def test_a_foreign_engine_under_the_expected_name_is_rebuilt(tmp_path, caplog):
    cache, build = EngineCache(tmp_path), FakeBuilder()
    wanted = _key()
    write_engine(cache.path("decoder", wanted), _key(gpu="Orin (sm_87)"), b"built elsewhere")
    with caplog.at_level(logging.WARNING):
        engine = cache.load_or_build("decoder", wanted, build)
    assert engine == b"engine-bytes\x01"
    assert "gpu: 'Orin (sm_87)' -> 'NVIDIA H200 (sm_90)'" in caplog.text
    assert read_engine(cache.path("decoder", wanted), wanted) == engine


def test_a_truncated_engine_is_rebuilt(tmp_path, caplog):
    cache, build = EngineCache(tmp_path), FakeBuilder()
    path = cache.path("decoder", _key())
    cache.load_or_build("decoder", _key(), build)
    path.write_bytes(path.read_bytes()[:-3])
    with caplog.at_level(logging.WARNING):
        cache.load_or_build("decoder", _key(), build)
    assert build.calls == 2
    assert "corrupt or truncated" in caplog.text


def test_a_file_without_our_header_is_not_handed_to_tensorrt(tmp_path):
    path = tmp_path / "plain.engine"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(EngineError, match="not a SynSeg TensorRT engine"):
        read_engine(path, _key())


def test_a_stale_engine_is_an_error_when_building_is_disabled(tmp_path):
    cache = EngineCache(tmp_path)
    write_engine(cache.path("decoder", _key()), _key(tensorrt_version="8.6.1"), b"old")
    with pytest.raises(EngineError, match="tensorrt_version: '8.6.1' -> '10.13.0'"):
        cache.load_or_build("decoder", _key(), FakeBuilder(), allow_build=False)


def test_a_missing_engine_is_an_error_when_building_is_disabled(tmp_path):
    with pytest.raises(EngineError, match="prebuild it with python -m synseg_core.runtime.tensorrt_backend"):
        EngineCache(tmp_path).load_or_build("decoder", _key(), FakeBuilder(), allow_build=False)


def test_a_failed_build_leaves_no_file(tmp_path):
    def failing():
        raise EngineError("out of workspace")

    with pytest.raises(EngineError, match="out of workspace"):
        EngineCache(tmp_path).load_or_build("decoder", _key(), failing)
    assert list(tmp_path.iterdir()) == []


def test_force_rebuilds_a_matching_engine(tmp_path):
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.load_or_build("decoder", _key(), build)
    assert cache.load_or_build("decoder", _key(), build, force=True) == b"engine-bytes\x02"


def test_build_progress_is_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        EngineCache(tmp_path).load_or_build("decoder", _key(), FakeBuilder())
    assert "building TensorRT engine decoder-" in caplog.text
    assert "this takes minutes" in caplog.text


@needs_tensorrt
@pytest.mark.parametrize("classes", [1, 5, 50])
def test_tensorrt_fp32_matches_onnxruntime(exported, tmp_path, tiny_model, classes):
    backend = TensorRTBackend(exported, cache_dir=tmp_path, max_batch=2)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64, generator=generator).numpy()
    text = torch.nn.functional.normalize(torch.randn(classes, 64, generator=generator), dim=-1).numpy()
    # TF32 kernels may serve FP32 layers on Ampere and later: a looser bound than ONNX Runtime's 1e-3.
    assert np.abs(backend.infer(pixels, text) - OnnxBackend(exported).infer(pixels, text)).max() < 1e-2


@needs_tensorrt
def test_tensorrt_reuses_its_engines(exported, tmp_path, caplog):
    TensorRTBackend(exported, cache_dir=tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        backend = TensorRTBackend(exported, cache_dir=tmp_path, allow_build=False)
    assert "building" not in caplog.text
    assert all(path.is_file() for path in backend.engine_paths.values())


@needs_tensorrt
def test_tensorrt_decodes_long_vocabularies_in_chunks(exported, tmp_path):
    backend = TensorRTBackend(exported, cache_dir=tmp_path, max_classes=16, opt_classes=8)
    pixels = np.zeros((1, 3, 64, 64), np.float32)
    text = np.eye(40, 64, dtype=np.float32)
    assert backend.infer(pixels, text).shape == (1, 40, 64, 64)


@needs_tensorrt
def test_tensorrt_postprocesses_in_the_engine_like_onnxruntime(exported, tmp_path):
    backend = TensorRTBackend(exported, cache_dir=tmp_path)
    pixels = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    text = np.eye(20, 64, dtype=np.float32)
    got, expected = backend.predict(pixels, text, (37, 101)), OnnxBackend(exported).predict(pixels, text, (37, 101))
    assert (got.labels == expected.labels).mean() >= 0.999
    assert np.abs(got.confidence - expected.confidence).max() <= 1e-3
