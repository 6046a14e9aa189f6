"""Segmenter + the shared pre/post-processing: what every backend's output means."""
from __future__ import annotations

import numpy as np
import pytest

from synseg_core import UNLABELED, Segmenter
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.processing import labels_from_maps, postprocess, preprocess


class FixedLogits(Backend):
    """A backend whose logits the test chooses: [K, h, w] repeated over the batch."""

    name = "fixed"

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float32)
        self.seen = []

    def infer(self, pixels, text):
        self.seen.append((pixels.shape, text.shape))
        return np.repeat(self.logits[None], pixels.shape[0], axis=0)


def embed(words, template_set):
    return np.ones((len(words), 4), np.float32)


def test_labels_are_the_argmax_and_unlabeled_below_threshold():
    maps = np.array([[[0.9, 0.2], [0.3, 0.1]], [[0.1, 0.6], [0.4, 0.2]]], np.float32)
    labels, confidence = labels_from_maps(maps, threshold=0.35)
    assert labels.tolist() == [[0, 1], [1, UNLABELED]]
    np.testing.assert_allclose(confidence, [[0.9, 0.6], [0.4, 0.2]])


def test_postprocess_upsamples_to_the_image_size_and_applies_sigmoid():
    logits = np.zeros((2, 4, 4), np.float32)
    logits[1] = 2.0
    result = postprocess(logits, (30, 50), ["door", "chair"], threshold=0.5)
    assert result.labels.shape == (30, 50) and result.class_maps.shape == (2, 30, 50)
    assert (result.labels == 1).all()
    np.testing.assert_allclose(result.confidence, 1 / (1 + np.exp(-2.0)), rtol=1e-5)
    assert result.vocabulary == ("door", "chair")


def test_postprocess_refuses_nan_maps():
    with pytest.raises(FloatingPointError, match="NaN"):
        postprocess(np.full((1, 2, 2), np.nan, np.float32), (4, 4), ["x"], 0.5)


def test_preprocess_resizes_and_normalises():
    image = np.full((10, 20, 3), 255, np.uint8)
    pixels = preprocess(image, (32, 48), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert pixels.shape == (1, 3, 32, 48) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, 1.0)


@pytest.mark.parametrize(
    "image, message",
    [(np.zeros((8, 8, 3), np.float32), "uint8"), (np.zeros((8, 8, 4), np.uint8), r"RGB \[H, W, 3\]"), ([[1]], "numpy array")],
)
def test_bad_images_get_a_clear_error(tiny_model, image, message):
    seg = Segmenter.from_model(tiny_model)
    with pytest.raises((ValueError, TypeError), match=message):
        seg.segment(image, ["door"])


def test_segmenter_runs_the_backend_once_on_the_model_input_size(tiny_model):
    backend = FixedLogits(np.stack([np.full((8, 8), 3.0), np.full((8, 8), -3.0)]))
    seg = Segmenter(backend, embed, tiny_model.config, input_size=(64, 128))
    out = seg.segment(np.zeros((48, 96, 3), np.uint8), ["door", "chair"])
    assert backend.seen == [((1, 3, 64, 128), (2, 4))]
    assert out.labels.shape == (48, 96) and (out.labels == 0).all()
    assert set(seg.timings) == {"text", "preprocess", "infer", "postprocess"}


def test_threshold_can_be_changed_per_call(tiny_model):
    backend = FixedLogits(np.zeros((1, 4, 4)))  # every score is exactly 0.5
    seg = Segmenter(backend, embed, tiny_model.config)
    assert (seg.segment(np.zeros((4, 4, 3), np.uint8), ["x"], threshold=0.4).labels == 0).all()
    assert (seg.segment(np.zeros((4, 4, 3), np.uint8), ["x"], threshold=0.6).labels == UNLABELED).all()


def test_input_size_must_be_a_multiple_of_the_patch(tiny_model):
    with pytest.raises(ValueError, match="multiples of the patch size"):
        Segmenter(FixedLogits(np.zeros((1, 4, 4))), embed, tiny_model.config, input_size=(50, 64))


def test_checkpoint_segmenter_gives_a_label_per_pixel(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint, backend="torch")
    out = seg.segment(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8), ["door", "chair", "floor"], threshold=0.0)
    assert out.labels.dtype == np.int32 and out.labels.shape == (40, 56)
    assert set(np.unique(out.labels)) <= {0, 1, 2}
    assert seg.backend_name == "torch" and seg.precision == "fp32"


def test_unknown_backend_lists_the_choices(tiny_checkpoint):
    with pytest.raises(ValueError, match="onnxruntime"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="magic")


def test_an_unknown_torch_backend_option_is_an_error_not_ignored(tiny_checkpoint):
    with pytest.raises(TypeError, match="engine_file"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="torch", engine_file="x")


def test_the_torch_backend_takes_an_empty_engine_path_and_refuses_a_given_one(tiny_checkpoint):
    assert Segmenter.from_checkpoint(tiny_checkpoint, backend="torch", engine_path="", onnx_dir=None).backend_name == "torch"
    with pytest.raises(ValueError, match="engine_path='model.engine' is for the onnxruntime and tensorrt backends"):
        Segmenter.from_checkpoint(tiny_checkpoint, backend="torch", engine_path="model.engine")


def test_inference_never_runs_the_fss_projector(tiny_model, monkeypatch):
    def training_only(*args):
        raise AssertionError("the FSS projector ran during inference")

    monkeypatch.setattr(tiny_model.projector, "forward", training_only)
    with pytest.raises(AssertionError, match="FSS projector"):  # the trap is live
        tiny_model.projector(None)
    out = Segmenter.from_model(tiny_model).segment(np.zeros((40, 56, 3), np.uint8), ["door", "chair"])
    assert out.labels.shape == (40, 56)


@pytest.mark.parametrize("words, message", [([], "empty"), (["a", "a"], "repeats")])
def test_bad_vocabulary_is_refused_before_inference(tiny_model, words, message):
    backend = FixedLogits(np.zeros((1, 4, 4)))
    seg = Segmenter(backend, embed, tiny_model.config)
    with pytest.raises(ValueError, match=message):
        seg.segment(np.zeros((4, 4, 3), np.uint8), words)
    assert backend.seen == []
