"""ONNX Runtime backend: parity with PyTorch and the reference post-processing, export on first use into the
user cache, variants, and clear errors for bad input."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
from postprocess_reference import reference_postprocess

from synseg_core import Segmenter, create_model, save_model
from synseg_core.export import convert_export, export_onnx, postprocess_graph, weights_sha256
from synseg_core.runtime.backend import check_logits
from synseg_core.runtime.export_format import ExportError, read_export
from synseg_core.runtime.factory import checkpoint_sha256, default_export_dir
from synseg_core.runtime.onnx_backend import OnnxBackend
from synseg_core.runtime.torch_backend import postprocess_logits


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    """Exports made on first use go to the user cache: a fresh one per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def square(tmp_path_factory, tiny_model, tiny_checkpoint):
    """64x64, the fast legacy exporter, from ``tiny_checkpoint``."""
    out = tmp_path_factory.mktemp("onnx") / "square"
    export_onnx(tiny_model, out, exporter="legacy", source_checkpoint=tiny_checkpoint)
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
    return np.stack([reference_postprocess(image, image.shape[1:])[0] for image in logits])


def _smooth_logits(classes, size, seed=0):
    generator = np.random.default_rng(seed)
    coarse = torch.from_numpy(generator.normal(0, 3, (1, classes, size[0] // 8, size[1] // 8)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False).numpy()
    return smooth + generator.normal(0, 0.1, smooth.shape).astype(np.float32)


@pytest.fixture(scope="module")
def postprocess_session():
    return onnxruntime.InferenceSession(postprocess_graph(18).SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("classes", [1, 20, 100])
@pytest.mark.parametrize("size", [(480, 640), (37, 53)])
def test_the_postprocessing_graph_matches_the_host_reference(postprocess_session, classes, size):
    logits = _smooth_logits(classes, (64, 64))
    labels, confidence, maps = postprocess_session.run(None, _post_inputs(logits, size, classes))
    ref_labels, ref_confidence, ref_maps = reference_postprocess(logits[0], size)
    assert labels.dtype == np.int32 and labels.shape == (1, *size) and maps.shape == (1, classes, *size)
    assert (labels[0] == ref_labels).mean() >= 0.999
    assert np.abs(confidence[0] - ref_confidence).max() <= 1e-4
    assert np.abs(maps[0] - ref_maps).max() <= 1e-4


def _post_inputs(logits, size, map_classes):
    return {"logits": logits, "size": np.asarray(size, np.int64), "map_classes": np.asarray([map_classes], np.int64)}


def test_the_postprocessing_graph_of_opset_17_gives_the_same_result(postprocess_session):
    inputs = _post_inputs(_smooth_logits(5, (64, 64)), (30, 41), 5)
    opset17 = onnxruntime.InferenceSession(postprocess_graph(17).SerializeToString(), providers=["CPUExecutionProvider"])
    for new, old in zip(opset17.run(None, inputs), postprocess_session.run(None, inputs), strict=True):
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("grid,size", [((64, 48), (480, 640)), ((1, 9), (5, 200)), ((7, 1), (1, 1)), ((64, 64), (20, 30))])
def test_the_postprocessing_graph_equals_the_torch_postprocessing(postprocess_session, grid, size):
    # Batch 2, single rows and columns, down- and upsampling; no class maps asked for: none computed.
    logits = np.ascontiguousarray(np.concatenate([_smooth_logits(20, (64, 64), seed) for seed in range(2)])[:, :, : grid[0], : grid[1]])
    labels, confidence, maps = postprocess_session.run(None, _post_inputs(logits, size, 0))
    torch_labels, torch_confidence, _ = postprocess_logits(torch.from_numpy(logits), size)
    assert maps.shape == (2, 0, *size)
    assert (labels == torch_labels.numpy()).mean() >= 0.9999
    assert np.abs(confidence - torch_confidence.numpy()).max() <= 1e-5


def test_the_postprocessing_graph_without_boundaries(postprocess_session):
    logits = np.zeros((1, 3, 8, 8), np.float32)
    logits[0, 1] = np.linspace(0.5, 1, 64, dtype=np.float32).reshape(8, 8)
    labels, confidence, _ = postprocess_session.run(None, _post_inputs(logits, (30, 50), 0))
    assert (labels == 1).all()
    np.testing.assert_allclose(confidence[0], reference_postprocess(logits[0], (30, 50))[1], atol=1e-6)


@pytest.mark.parametrize("classes", [1, 20, 300])
def test_predict_matches_the_reference_on_its_own_logits(square, tiny_model, classes):
    backend = OnnxBackend(square)
    pixels, text = _inputs(tiny_model, (64, 64), classes)
    prediction = backend.predict(pixels, text, (37, 101), class_maps=True)
    assert prediction.labels.shape == (2, 37, 101) and prediction.class_maps.shape == (2, classes, 37, 101)
    for image, logits in enumerate(backend.infer(pixels, text)):
        labels, confidence, maps = reference_postprocess(logits, (37, 101))
        assert (prediction.labels[image] == labels).mean() >= 0.999
        assert np.abs(prediction.confidence[image] - confidence).max() <= 1e-4
        assert np.abs(prediction.class_maps[image] - maps).max() <= 1e-4


def test_predict_leaves_out_the_class_maps_unless_asked(square, tiny_model):
    pixels, text = _inputs(tiny_model, (64, 64), 4)
    assert OnnxBackend(square).predict(pixels, text, (48, 64)).class_maps is None


def test_predict_across_vocabulary_chunks_equals_one_pass(square, tiny_model):
    pixels, text = _inputs(tiny_model, (64, 64), 20)
    chunked, whole = OnnxBackend(square, max_classes=6).predict(pixels, text, (50, 70)), OnnxBackend(square).predict(pixels, text, (50, 70))
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    np.testing.assert_allclose(chunked.confidence, whole.confidence, atol=1e-6)


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
    assert read_export(default_export_dir(checkpoint_sha256(checkpoint), (64, 64), "fp32")).precision == "fp32"
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
    cached = default_export_dir(checkpoint_sha256(checkpoint), (64, 64), "fp32")
    shutil.copytree(square, cached)  # an export of other weights where this checkpoint's belongs
    with caplog.at_level(logging.INFO):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy")
    assert "not exported from this checkpoint" in caplog.text
    assert read_export(cached).weights_sha256 == weights_sha256(retrained)


def test_the_export_goes_into_the_user_cache_and_never_into_the_checkpoint(tmp_path, tiny_model):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    before = sorted(p.name for p in checkpoint.iterdir())
    backend = Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy").backend
    assert backend.directory == tmp_path / "cache" / "synseg" / "onnx" / checkpoint_sha256(checkpoint)[:16] / "64x64_fp32"
    assert sorted(p.name for p in checkpoint.iterdir()) == before


def test_a_usable_export_with_the_text_tower_never_builds_the_torch_model(tmp_path, tiny_model, monkeypatch):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", exporter="legacy")  # first use: exports

    def no_model(*args, **kwargs):
        raise AssertionError("the torch model was built")

    monkeypatch.setattr("synseg_core.checkpoint.load_model", no_model)
    segmenter = Segmenter.from_checkpoint(checkpoint, backend="onnxruntime")
    assert type(segmenter.embed_text).__name__ == "OnnxTextEmbedder"
    assert segmenter.segment(np.zeros((40, 56, 3), np.uint8), ["door", "chair"]).labels.shape == (40, 56)


def test_exporting_without_torch_says_what_to_install(tmp_path, tiny_model, monkeypatch):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(ImportError, match=r"needs PyTorch: pip install torch 'synseg\[onnx\]'"):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime")


def test_an_explicit_export_of_other_weights_is_refused(tmp_path, square):
    checkpoint = save_model(create_model("tiny", seed=1), tmp_path / "ckpt")
    with pytest.raises(ExportError, match="not exported from this checkpoint"):
        Segmenter.from_checkpoint(checkpoint, backend="onnxruntime", onnx_dir=square)


def test_an_explicit_export_made_from_a_model_is_checked_against_the_weights(tmp_path, tiny_model):
    export_onnx(tiny_model, tmp_path / "from-model", exporter="legacy", check=False)  # no source checkpoint recorded
    with pytest.raises(ExportError, match="exported from other weights"):
        Segmenter.from_checkpoint(save_model(create_model("tiny", seed=1), tmp_path / "other"), backend="onnxruntime", onnx_dir=tmp_path / "from-model")
    same = Segmenter.from_checkpoint(save_model(tiny_model, tmp_path / "same"), backend="onnxruntime", onnx_dir=tmp_path / "from-model")
    assert same.backend.directory == tmp_path / "from-model"


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
