"""Segmenter + the shared pre-processing and threshold: what every backend's output means."""
from __future__ import annotations

import numpy as np
import pytest
from postprocess_reference import ReferenceBackend, reference_postprocess

from synseg_core import UNLABELED, Segmenter
from synseg_core.runtime.processing import apply_threshold, preprocess


class FixedLogits(ReferenceBackend):
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


def test_pixels_below_the_threshold_are_unlabeled():
    labels = np.array([[0, 1], [1, 0]], np.int32)
    confidence = np.array([[0.9, 0.6], [0.4, 0.2]], np.float32)
    assert apply_threshold(labels, confidence, threshold=0.35).tolist() == [[0, 1], [1, UNLABELED]]
    assert labels.tolist() == [[0, 1], [1, 0]]  # the argmax labels are not modified in place


def test_the_reference_upsamples_to_the_image_size_and_applies_sigmoid():
    logits = np.zeros((2, 4, 4), np.float32)
    logits[1] = 2.0
    labels, confidence, maps = reference_postprocess(logits, (30, 50))
    assert labels.shape == (30, 50) and maps.shape == (2, 30, 50)
    assert (labels == 1).all()
    np.testing.assert_allclose(confidence, 1 / (1 + np.exp(-2.0)), rtol=1e-5)


def test_a_segmentation_carries_class_maps_only_when_asked_for(tiny_model):
    logits = np.zeros((2, 4, 4), np.float32)
    logits[1] = 2.0
    seg = Segmenter(FixedLogits(logits), embed, tiny_model.config)
    plain = seg.segment(np.zeros((30, 50, 3), np.uint8), ["door", "chair"])
    assert plain.class_maps is None and plain.vocabulary == ("door", "chair")
    assert (plain.labels == 1).all()
    np.testing.assert_allclose(plain.confidence, 1 / (1 + np.exp(-2.0)), rtol=1e-5)
    full = seg.segment(np.zeros((30, 50, 3), np.uint8), ["door", "chair"], class_maps=True)
    assert full.class_maps.shape == (2, 30, 50)
    np.testing.assert_allclose(full.class_maps[0], 0.5, rtol=1e-6)


def test_nan_activation_maps_are_refused_rather_than_turned_into_a_mask(tiny_model):
    seg = Segmenter.from_model(tiny_model)
    hook = tiny_model.register_forward_hook(lambda module, args, logits: logits * float("nan"))
    try:
        with pytest.raises(FloatingPointError, match="NaN"):
            seg.segment(np.zeros((30, 50, 3), np.uint8), ["door"])
    finally:
        hook.remove()


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
