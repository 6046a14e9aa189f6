"""Torch backend: device-side post-processing (parity with the host reference), options, CUDA-graph cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from postprocess_reference import reference_postprocess

from synseg_core import Segmenter
from synseg_core.runtime.torch_backend import GraphCache, TorchBackend, postprocess_logits

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def _logits(classes, size=(64, 64), seed=0):
    # Smooth maps with distinct ranges, like a decoder's, plus noise so that ties are rare.
    generator = np.random.default_rng(seed)
    coarse = generator.normal(0, 3, (classes, size[0] // 8, size[1] // 8)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=size, mode="bilinear", align_corners=False)[0].numpy()
    return smooth + generator.normal(0, 0.1, smooth.shape).astype(np.float32)


@pytest.mark.parametrize("classes", [1, 20, 100])
@pytest.mark.parametrize("size", [(480, 640), (37, 53)])
def test_device_postprocessing_matches_the_host_reference(classes, size):
    logits = _logits(classes)
    labels, confidence, maps = postprocess_logits(torch.from_numpy(logits)[None], size, class_maps=True)
    ref_labels, ref_confidence, ref_maps = reference_postprocess(logits, size)
    assert labels.dtype == torch.int32 and labels.shape == (1, *size)
    assert (labels[0].numpy() == ref_labels).mean() >= 0.999
    assert np.abs(confidence[0].numpy() - ref_confidence).max() <= 1e-4
    assert np.abs(maps[0].numpy() - ref_maps).max() <= 1e-4


@pytest.mark.parametrize("static_shapes", [False, True])
def test_postprocessing_keeps_the_first_of_equal_scores(monkeypatch, static_shapes):
    monkeypatch.setattr("synseg_core.runtime.torch_backend.POST_CLASSES_PER_PASS", 2)  # dense: in passes over K
    logits = torch.zeros(1, 5, 4, 4)
    logits[0, 1] = 1.0
    logits[0, 3] = 1.0  # same score as class 1, in a later pass
    logits[0, 4, 0, 0] = 2.0
    labels, confidence, _ = postprocess_logits(logits, (4, 4), static_shapes=static_shapes)
    expected = torch.full((4, 4), 1, dtype=torch.int32)
    expected[0, 0] = 4
    assert torch.equal(labels[0], expected)
    assert confidence[0, 1, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))))


@pytest.mark.parametrize("grid,size", [((64, 64), (480, 640)), ((64, 48), (37, 53)), ((1, 9), (5, 200)), ((7, 1), (1, 1))])
def test_winner_first_equals_upsampling_every_map(grid, size, monkeypatch):
    # Batch 2, grids and outputs of one row or column, down- and upsampling; small passes of blended cells.
    monkeypatch.setattr("synseg_core.runtime.torch_backend.POST_VALUES_PER_PASS", 5000)
    logits = torch.from_numpy(np.stack([_logits(20, (64, 64), seed) for seed in range(2)]))[:, :, : grid[0], : grid[1]]
    labels, confidence, _ = postprocess_logits(logits, size)
    dense_labels, dense_confidence, _ = postprocess_logits(logits, size, static_shapes=True)
    assert (labels == dense_labels).float().mean() >= 0.9999
    assert (confidence - dense_confidence).abs().max() <= 1e-5


def test_winner_first_with_one_class_everywhere_blends_nothing():
    logits = torch.zeros(1, 3, 8, 8)
    logits[0, 2] = torch.linspace(0.5, 1, 64).view(8, 8)  # class 2 wins every tap, with varying scores
    labels, confidence, _ = postprocess_logits(logits, (30, 50))
    dense_labels, dense_confidence, _ = postprocess_logits(logits, (30, 50), static_shapes=True)
    assert torch.equal(labels, torch.full((1, 30, 50), 2, dtype=torch.int32))
    assert (confidence - dense_confidence).abs().max() <= 1e-6


def test_predict_returns_labels_and_confidence_at_the_requested_size_without_class_maps(tiny_model):
    backend = TorchBackend(tiny_model)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    text = np.eye(3, tiny_model.text_dim, dtype=np.float32)
    prediction = backend.predict(pixels, text, (33, 47))
    assert prediction.labels.shape == (2, 33, 47) and prediction.labels.dtype == np.int32
    assert prediction.confidence.shape == (2, 33, 47) and prediction.confidence.dtype == np.float32
    assert prediction.class_maps is None
    logits = backend.infer(pixels, text)
    for image in range(2):
        labels, confidence, _ = reference_postprocess(logits[image], (33, 47))
        assert (prediction.labels[image] == labels).mean() >= 0.999
        assert np.abs(prediction.confidence[image] - confidence).max() <= 1e-4


def test_cuda_graphs_are_off_by_default_on_the_cpu(tiny_model):
    assert TorchBackend(tiny_model).cuda_graphs is False


def test_cuda_graphs_on_the_cpu_are_refused_with_a_hint(tiny_model):
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        TorchBackend(tiny_model, cuda_graphs=True)


def test_fp16_on_the_cpu_is_refused_with_a_hint(tiny_model):
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        TorchBackend(tiny_model, precision="fp16")


def test_an_unknown_precision_is_refused(tiny_model):
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(tiny_model, precision="int4")


@needs_no_cuda
def test_a_cuda_device_without_a_gpu_is_explained(tiny_model):
    with pytest.raises(RuntimeError, match="PyTorch sees no CUDA GPU"):
        TorchBackend(tiny_model, device="cuda")


def test_the_graph_cache_size_must_be_positive(tiny_model):
    with pytest.raises(ValueError, match="max_graphs must be >= 1"):
        TorchBackend(tiny_model, max_graphs=0)


class FakeCapture:
    """Records captures; its runners answer the key they were captured for (so a stale replay would show)."""

    def __init__(self):
        self.captured = []

    def __call__(self, key, images, text):
        self.captured.append(key)
        return lambda images, text: (key, images.shape, text.shape)


def test_the_graph_cache_captures_each_shape_once_and_replays_it():
    capture = FakeCapture()
    cache = GraphCache(capture, max_entries=4)
    images, text = torch.zeros(1, 3, 8, 8), torch.zeros(20, 4)
    first = cache.run(("predict", 1, 3, 8, 8, 20, (4, 4), False), images, text)
    again = cache.run(("predict", 1, 3, 8, 8, 20, (4, 4), False), images, text)
    other = cache.run(("predict", 1, 3, 8, 8, 5, (4, 4), False), images, text[:5])
    assert capture.captured == [("predict", 1, 3, 8, 8, 20, (4, 4), False), ("predict", 1, 3, 8, 8, 5, (4, 4), False)]
    assert first == again and first[0][5] == 20 and other[0][5] == 5
    assert cache.captures == 2 and len(cache) == 2


def test_the_graph_cache_drops_the_least_recently_used_shape():
    capture = FakeCapture()
    cache = GraphCache(capture, max_entries=2)
    images, text = torch.zeros(1, 3, 8, 8), torch.zeros(2, 4)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        cache.run(key, images, text)
    assert cache.keys() == ["a", "c"]
    cache.run("b", images, text)
    assert capture.captured == ["a", "b", "c", "b"]


def test_the_backend_keys_graphs_by_batch_input_size_vocabulary_size_and_output_size(tiny_model, monkeypatch):
    backend = TorchBackend(tiny_model)
    capture = FakeCapture()
    backend.graphs = GraphCache(capture)
    monkeypatch.setattr(backend, "cuda_graphs", True)  # the cache logic, with a fake capture on the CPU
    pixels = np.zeros((1, 3, 64, 64), np.float32)
    text = np.ones((3, tiny_model.text_dim), np.float32)
    backend._run(backend._key("predict", pixels, text, (48, 64), False), pixels, text)
    backend._run(backend._key("predict", pixels, text, (48, 64), False), pixels, text)
    backend._run(backend._key("predict", pixels, text[:2], (48, 64), False), pixels, text[:2])
    backend._run(backend._key("logits", pixels, text, None, False), pixels, text)
    assert capture.captured == [
        ("predict", 1, 3, 64, 64, 3, (48, 64), False), ("predict", 1, 3, 64, 64, 2, (48, 64), False), ("logits", 1, 3, 64, 64, 3, None, False),
    ]


def test_segmenter_from_checkpoint_passes_torch_options_to_the_backend(tiny_checkpoint):
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, backend="torch", max_graphs=3, cuda_graphs=False)
    assert segmenter.backend.graphs.max_entries == 3 and segmenter.backend.cuda_graphs is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_replays_match_eager_results(tiny_model):
    eager = TorchBackend(tiny_model, device="cuda", cuda_graphs=False)
    graphs = TorchBackend(tiny_model, device="cuda", cuda_graphs=True)
    pixels = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    text = np.eye(4, tiny_model.text_dim, dtype=np.float32)
    for _ in range(2):
        replayed = graphs.predict(pixels, text, (48, 80))
    reference = eager.predict(pixels, text, (48, 80))
    assert graphs.graphs.captures == 1
    assert (replayed.labels == reference.labels).mean() >= 0.999
    assert np.abs(replayed.confidence - reference.confidence).max() <= 1e-4


def test_the_segment_cli_passes_the_fast_path_options_to_the_torch_backend(tiny_checkpoint):
    from synseg_core.segment import build_parser, build_segmenter

    args = build_parser().parse_args(["-v", "door", "-c", str(tiny_checkpoint), "--no-cuda-graphs"])
    segmenter = build_segmenter(args)
    assert segmenter.backend.cuda_graphs is False and segmenter.backend.compiled is False


def test_the_segment_cli_refuses_torch_options_for_another_backend(tiny_checkpoint):
    from synseg_core.segment import build_parser, build_segmenter

    args = build_parser().parse_args(["-v", "door", "-c", str(tiny_checkpoint), "--backend", "onnxruntime", "--cuda-graphs"])
    with pytest.raises(ValueError, match="options of the torch backend, not onnxruntime"):
        build_segmenter(args)


def test_the_evaluate_cli_accepts_the_fast_path_options():
    from synseg_core.evaluate import build_parser

    args = build_parser().parse_args(["-c", "ckpt", "--dataset", "folder", "--data-root", "d", "--cuda-graphs", "--compile"])
    assert (args.cuda_graphs, args.compile) == (True, True)
