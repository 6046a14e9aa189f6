"""ONNX Runtime backend: parity with PyTorch, export on first use, variants, and clear errors for bad input."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from synseg_core import Segmenter, create_model, save_model
from synseg_core.export import convert_export, export_onnx, weights_sha256
from synseg_core.runtime.onnx_backend import ExportError, OnnxBackend, check_logits, read_export
from synseg_core.runtime.processing import labels_from_maps, sigmoid


@pytest.fixture(scope="module")
def square(tmp_path_factory, tiny_model):
    """64x64, the fast legacy exporter."""
    out = tmp_path_factory.mktemp("onnx") / "square"
    export_onnx(tiny_model, out, exporter="legacy")
    return out


@pytest.fixture(scope="module")
def wide(tmp_path_factory, tiny_model):
    """64x96 (H x W) through the default (dynamo) exporter: a second size and the default path."""
    out = tmp_path_factory.mktemp("onnx") / "wide"
    export_onnx(tiny_model, out, input_size=(64, 96), check=False)  # the tests below compare with PyTorch
    return out


def _inputs(model, size, classes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(2, 3, *size, generator=generator)
    text = torch.nn.functional.normalize(torch.randn(classes, model.text_dim, generator=generator), dim=-1)
    return pixels.numpy(), text.numpy()


def _labels(logits):
    return np.stack([labels_from_maps(sigmoid(image), 0.5)[0] for image in logits])


@pytest.mark.parametrize("export", ["square", "wide"])
@pytest.mark.parametrize("classes", [1, 5, 50])
def test_logits_and_labels_match_pytorch(request, tiny_model, export, classes):
    directory = request.getfixturevalue(export)
    backend = OnnxBackend(directory)
    pixels, text = _inputs(tiny_model, backend.input_size, classes)
    logits = backend.infer(pixels, text)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(pixels), torch.from_numpy(text)).numpy()
    assert logits.shape == (2, classes, *backend.input_size)
    assert np.abs(logits - expected).max() <= 1e-3
    assert (_labels(logits) == _labels(expected)).mean() >= 0.999


def test_vocabularies_beyond_max_classes_are_decoded_in_chunks(square, tiny_model):
    backend = OnnxBackend(square)
    pixels, text = _inputs(tiny_model, (64, 64), 300)
    assert backend.meta.max_classes == 256
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(pixels), torch.from_numpy(text)).numpy()
    assert np.abs(backend.infer(pixels, text) - expected).max() <= 1e-3


def test_a_smaller_chunk_size_bounds_memory_without_changing_logits(square, tiny_model):
    pixels, text = _inputs(tiny_model, (64, 64), 20)
    chunked = OnnxBackend(square, max_classes=8)
    assert chunked.max_classes == 8
    np.testing.assert_allclose(chunked.infer(pixels, text), OnnxBackend(square).infer(pixels, text), atol=1e-5)


def test_a_new_vocabulary_needs_no_new_session(square, tiny_model):
    backend = OnnxBackend(square)
    sessions = (backend._image, backend._decoder)
    for classes in (3, 17):
        pixels, text = _inputs(tiny_model, (64, 64), classes)
        assert backend.infer(pixels, text).shape[1] == classes
    assert (backend._image, backend._decoder) == sessions


def test_segmenter_exports_on_first_use_then_reuses_the_export(tmp_path, tiny_model, caplog):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    with caplog.at_level(logging.INFO):
        first = Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy")
    assert "exporting it now" in caplog.text
    assert read_export(checkpoint / "onnx" / "64x64_fp32").precision == "fp32"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy")
    assert "exporting" not in caplog.text
    expected = Segmenter.from_model(tiny_model).segment(image, ["door", "chair"])
    for segmenter in (first, again):
        assert segmenter.backend_name == "onnxruntime"
        assert (segmenter.segment(image, ["door", "chair"]).labels == expected.labels).mean() >= 0.999


def test_an_export_of_older_weights_is_redone(tmp_path, square, caplog):
    retrained = create_model("tiny", seed=1)
    checkpoint = save_model(retrained, tmp_path / "ckpt")
    shutil.copytree(square, checkpoint / "onnx" / "64x64_fp32")  # exported before the checkpoint changed
    with caplog.at_level(logging.INFO):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy")
    assert "exported from other weights" in caplog.text
    assert read_export(checkpoint / "onnx" / "64x64_fp32").weights_sha256 == weights_sha256(retrained)


def test_a_read_only_checkpoint_exports_into_the_user_cache(tmp_path, tiny_model, monkeypatch):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("synseg_core.runtime.onnx_backend.os.access", lambda path, mode: Path(path) != checkpoint)
    backend = Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy").backend
    assert backend.directory == tmp_path / "cache" / "synseg" / "onnx" / weights_sha256(tiny_model)[:16] / "64x64_fp32"
    assert not (checkpoint / "onnx").exists()


def test_an_explicit_export_of_other_weights_is_refused(tmp_path, square):
    checkpoint = save_model(create_model("tiny", seed=1), tmp_path / "ckpt")
    with pytest.raises(ExportError, match="exported from other weights"):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", onnx_dir=square)


def test_the_ros_engine_path_may_name_a_file_in_the_export_folder(tiny_checkpoint, square):
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", engine_path=square / "decoder.onnx")
    assert segmenter.backend.directory == square


def test_an_unknown_backend_option_is_an_error_not_ignored(tiny_checkpoint, square):
    with pytest.raises(TypeError, match="engine_file"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", onnx_dir=square, engine_file="x")


def test_an_explicit_export_for_another_size_is_refused(tiny_checkpoint, square):
    with pytest.raises(ExportError, match="exported for input size 64x64, not 96x96"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", onnx_dir=square, input_size=96)


def test_missing_export_is_an_error_when_exporting_is_disabled(tmp_path, tiny_model):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    with pytest.raises(ExportError, match="python -m synseg_core.export"):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", export_if_missing=False)


def test_int8_variant_keeps_the_labels_of_fp32(square, tmp_path, tiny_model):
    convert_export(square, tmp_path / "int8", "int8")
    int8, fp32 = OnnxBackend(tmp_path / "int8"), OnnxBackend(square)
    pixels, text = _inputs(tiny_model, (64, 64), 5)
    quantized, reference = int8.infer(pixels, text), fp32.infer(pixels, text)
    assert int8.precision == "int8"
    assert np.corrcoef(quantized.ravel(), reference.ravel())[0, 1] > 0.99
    assert (_labels(quantized) == _labels(reference)).mean() >= 0.9


def test_fp16_variant_runs_unoptimised_on_the_cpu_and_agrees_with_fp32(square, tmp_path, tiny_model, caplog):
    convert_export(square, tmp_path / "fp16", "fp16")
    with caplog.at_level(logging.WARNING):
        fp16 = OnnxBackend(tmp_path / "fp16")
    assert "FP16 on the CPU runs unoptimised" in caplog.text
    pixels, text = _inputs(tiny_model, (64, 64), 5)
    half, reference = fp16.infer(pixels, text), OnnxBackend(square).infer(pixels, text)
    assert np.abs(half - reference).max() < 0.05
    assert (_labels(half) == _labels(reference)).mean() >= 0.99


def test_missing_export_folder_is_explained(tmp_path):
    with pytest.raises(ExportError, match="export.json: missing; export the model first"):
        OnnxBackend(tmp_path)


def test_a_corrupt_graph_is_named(square, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(square, broken)
    data = (broken / "decoder.onnx").read_bytes()
    (broken / "decoder.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match=r"decoder\.onnx: corrupt or replaced"):
        OnnxBackend(broken)
    with pytest.raises(ExportError, match=r"decoder\.onnx: onnxruntime cannot load it"):
        OnnxBackend(broken, verify=False)


@pytest.mark.parametrize(
    "pixels, text, message",
    [
        (np.zeros((1, 3, 64, 64), np.uint8), np.ones((2, 64), np.float32), "pixels must be normalised float32"),
        (np.zeros((1, 3, 32, 32), np.float32), np.ones((2, 64), np.float32), "built for 64x64"),
        (np.zeros((3, 64, 64), np.float32), np.ones((2, 64), np.float32), r"\[B, 3, H, W\]"),
        (np.full((1, 3, 64, 64), np.nan, np.float32), np.ones((2, 64), np.float32), "pixels contain NaN"),
        (np.zeros((1, 3, 64, 64), np.float32), np.ones((0, 64), np.float32), "vocabulary is empty"),
        (np.zeros((1, 3, 64, 64), np.float32), np.ones((2, 32), np.float32), r"text embeddings must be \[K, 64\]"),
        (np.zeros((1, 3, 64, 64), np.float32), np.ones((2, 64), np.float64), "must be float32"),
        (np.zeros((1, 3, 64, 64), np.float32), np.full((2, 64), np.inf, np.float32), "text embeddings contain NaN or inf"),
    ],
)
def test_bad_network_inputs_get_a_clear_error(square, pixels, text, message):
    with pytest.raises(ValueError, match=message):
        OnnxBackend(square).infer(pixels, text)


def test_nan_logits_are_refused_rather_than_turned_into_a_mask():
    with pytest.raises(FloatingPointError, match="refusing to return a wrong mask"):
        check_logits(np.array([[[[0.0, np.nan]]]], np.float32), "onnxruntime")


def test_an_over_long_vocabulary_is_refused_before_inference(tiny_checkpoint, square):
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, backend="onnxruntime", onnx_dir=square)
    with pytest.raises(ValueError, match="at most 1024"):
        segmenter.segment(np.zeros((64, 64, 3), np.uint8), [f"w{i}" for i in range(1025)])


def test_unknown_device_is_explained(square):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        OnnxBackend(square, device="tpu")


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_cuda_without_the_cuda_provider_is_explained(square):
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        OnnxBackend(square, device="cuda")
