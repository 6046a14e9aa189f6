"""Evaluation: sliding windows, the background rule, known-answer scores, reports and refusal of bad datasets."""
import json

import numpy as np
import pytest
from PIL import Image
from postprocess_reference import ReferenceBackend

from synseg_core.config import SynSegConfig
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.synthetic import CLASSES, write_synthetic_dataset
from synseg_core.evaluate import main as evaluate_main
from synseg_core.evaluation.inference import SlidingWindow, pamr_refiner, resized_shape, window_starts
from synseg_core.evaluation.protocols import get_protocol
from synseg_core.evaluation.report import overlay_grid, write_report
from synseg_core.evaluation.runner import evaluate_dataset
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.visualize import colour_for

RED_STEP = 40  # class id c is painted with red = 40 * c, which the fake backend reads back


class ColourCodeBackend(ReferenceBackend):
    """Reads the class painted into each pixel's red channel and predicts ``confuse[class]`` there.

    Per-pixel and position-independent, so the exact answer survives any window layout.
    """

    name = "colour-code"

    def __init__(self, confuse: dict[int, int]):
        self.confuse = confuse

    def infer(self, pixels, text):
        painted = np.rint(pixels[:, 0] * 255 / RED_STEP).astype(int)  # [B, H, W]
        predicted = np.vectorize(lambda c: self.confuse.get(c, -1))(painted)
        classes = np.arange(text.shape[0])[None, :, None, None]
        return np.where(predicted[:, None] == classes, 5.0, -5.0).astype(np.float32)


class GroundTruthBackend(ReferenceBackend):
    """Finds each window among a folder's images and predicts that image's ground-truth mask, ``confuse`` applied.

    Exact under the ``synthetic`` protocol on 64-px scenes: one window per image, nothing resized.
    """

    name = "ground-truth"

    def __init__(self, root, confuse: dict[int, int]):
        self.masks = {np.asarray(Image.open(path).convert("RGB")).tobytes(): np.asarray(Image.open(root / "masks" / path.name))
                      for path in sorted((root / "images").glob("*.png"))}
        self.confuse = confuse

    def infer(self, pixels, text):
        classes = np.arange(text.shape[0])
        relabel = classes.copy()
        relabel[list(self.confuse)] = list(self.confuse.values())
        logits = []
        for window in pixels:  # [3, H, W] of image / 255 (mean 0, std 1)
            image = np.rint(window.transpose(1, 2, 0) * 255).astype(np.uint8)
            predicted = relabel[self.masks[image.tobytes()]]
            logits.append(np.where(predicted[None] == classes[:, None, None], 5.0, -5.0))
        return np.stack(logits).astype(np.float32)


def one_hot_words(words, template_set):
    return np.eye(len(words), dtype=np.float32)


def segmenter_on(backend):
    """A Segmenter that feeds ``backend`` raw pixels / 255 (mean 0, std 1) and one-hot class embeddings."""
    config = SynSegConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return Segmenter(backend, one_hot_words, config, patch_size=16)


def fake_segmenter(confuse):
    return segmenter_on(ColourCodeBackend(confuse))


def write_folder(root, classes, masks):
    """A generic-layout dataset whose images encode their masks (red = 40 * class id)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for n, mask in enumerate(masks):
        image = np.zeros((*mask.shape, 3), np.uint8)
        image[..., 0] = RED_STEP * mask
        Image.fromarray(image).save(root / "images" / f"{n}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{n}.png")
    return root


def quadrant_mask():
    """32x32: left half class 0, top-right class 1, bottom-right class 2 (512 / 256 / 256 pixels)."""
    mask = np.zeros((32, 32), np.uint8)
    mask[:16, 16:] = 1
    mask[16:, 16:] = 2
    return mask


NATIVE_WINDOWS = get_protocol("synthetic", short_side=0, crop=16, stride=8)


def test_window_starts_cover_the_image_with_the_last_window_flush():
    assert window_starts(600, 448, 224) == [0, 152]
    assert window_starts(1000, 448, 224) == [0, 224, 448, 552]
    assert window_starts(300, 448, 224) == [0]


def test_short_side_resize_keeps_the_aspect_ratio_and_caps_the_long_side():
    assert resized_shape(375, 500, 448, 2048) == (448, 597)
    assert resized_shape(1024, 2048, 448, 2048) == (448, 896)
    assert resized_shape(100, 1000, 448, 2048) == (205, 2048)
    assert resized_shape(50, 70, None, None) == (50, 70)


def test_protocol_presets_state_their_settings():
    tcl, sclip = get_protocol("tcl"), get_protocol("sclip")
    assert (tcl.short_side, tcl.crop, tcl.stride, tcl.template_set, tcl.pamr, tcl.background_threshold) == (448, 448, 224, "tcl", True, 0.4)
    assert get_protocol("tcl", pamr=False).background_threshold == 0.5
    assert (sclip.short_side, sclip.crop, sclip.stride, sclip.template_set) == (336, 224, 112, "imagenet80")


def test_known_answer_through_overlapping_sliding_windows(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path, ["sky", "cat", "dog"], [quadrant_mask()]))
    inference = SlidingWindow(fake_segmenter({0: 0, 1: 1, 2: 1}), NATIVE_WINDOWS)  # dog mistaken for cat
    scores = evaluate_dataset(inference, dataset, progress=False).scores
    assert scores.iou.tolist() == [1.0, 0.5, 0.0]
    assert scores.miou == pytest.approx(0.5)
    assert scores.pixel_accuracy == pytest.approx(0.75)


def test_background_is_where_no_class_beats_the_constant_score(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path, ["background", "cat", "dog"], [quadrant_mask()]))
    assert dataset.background_index == 0
    # nothing fires on background pixels (red 0 -> class 0 unmapped): they fall to the constant map
    inference = SlidingWindow(fake_segmenter({1: 0, 2: 1}), NATIVE_WINDOWS)
    prediction = inference.predict(dataset[0].image, inference.encode(["cat", "dog"]), background_index=0)
    assert (prediction == quadrant_mask()).all()


def test_resized_evaluation_scores_at_the_original_resolution(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path, ["sky", "cat", "dog"], [quadrant_mask()]))
    upscaled = get_protocol("synthetic", short_side=64, crop=32, stride=16)  # 2x, 3x3 windows, then back to 32x32
    evaluation = evaluate_dataset(SlidingWindow(fake_segmenter({0: 0, 1: 1, 2: 2}), upscaled), dataset, progress=False)
    assert evaluation.confusion.sum() == 32 * 32
    assert evaluation.scores.pixel_accuracy > 0.97


def test_report_writes_results_markdown_bar_chart_and_overlays(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path / "data", ["sky", "cat", "dog"], [quadrant_mask()] * 2))
    inference = SlidingWindow(fake_segmenter({0: 0, 1: 1, 2: 1}), NATIVE_WINDOWS)
    evaluation = evaluate_dataset(inference, dataset, keep_examples=2, progress=False)
    settings = {"method": "fake", "model": "none", "backend": "colour-code", "dataset": "folder",
                "protocol": NATIVE_WINDOWS.to_dict(), "protocol_description": NATIVE_WINDOWS.describe()}
    write_report(tmp_path / "out", evaluation, settings)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (results["miou"], results["pixel_accuracy"], results["per_class_iou"]) == (50.0, 75.0, {"sky": 100.0, "cat": 50.0, "dog": 0.0})
    assert "| cat | 50.00 |" in (tmp_path / "out" / "results.md").read_text()
    assert Image.open(tmp_path / "out" / "class_iou.png").size[0] > 100
    assert Image.open(tmp_path / "out" / "overlays.png").size[1] > 2 * 160


def test_overlays_carry_a_legend_with_the_colour_of_every_class_shown(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path / "data", ["sky", "cat", "dog", "car"], [quadrant_mask()]))
    inference = SlidingWindow(fake_segmenter({0: 0, 1: 1, 2: 1}), NATIVE_WINDOWS)
    evaluation = evaluate_dataset(inference, dataset, keep_examples=1, progress=False)
    grid = overlay_grid(evaluation.examples, evaluation.class_names)
    panels_width = 3 * 160 + 2 * 4  # 32x32 scenes: three 160-px tiles and two gaps; the legend is right of them
    legend = grid[:, panels_width:].reshape(-1, 3)
    found = {name for name in evaluation.class_names if (legend == colour_for(name)).all(axis=1).any()}
    assert found == {"sky", "cat", "dog"}  # car is neither in the truth nor predicted


def cli(tiny_checkpoint, root, out, *extra):
    return evaluate_main(["-c", str(tiny_checkpoint), "--dataset", "folder", "--data-root", str(root), "--protocol", "synthetic",
                          "--out", str(out), "--quiet", *extra])


def test_cli_scores_a_checkpoint_and_records_the_protocol(tiny_checkpoint, tmp_path):
    root = write_folder(tmp_path / "data", ["sky", "cat", "dog"], [quadrant_mask()] * 2)
    assert cli(tiny_checkpoint, root, tmp_path / "out", "--templates", "single") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["protocol"]["name"] == "synthetic" and results["protocol"]["template_set"] == "single"
    assert np.array(results["confusion"]).sum() == 2 * 32 * 32


def test_cli_names_the_background_score_only_for_a_dataset_with_a_background_class(tiny_checkpoint, tmp_path):
    described = {}
    for classes in (["sky", "cat", "dog"], ["background", "cat", "dog"]):
        root = write_folder(tmp_path / classes[0], classes, [quadrant_mask()])
        assert cli(tiny_checkpoint, root, tmp_path / f"out_{classes[0]}") == 0
        described[classes[0]] = json.loads((tmp_path / f"out_{classes[0]}" / "results.json").read_text())["protocol_description"]
    assert "background score" not in described["sky"] and described["sky"].endswith("no background class")
    assert described["background"].endswith("background score 0.5")


def test_cli_known_answer_on_generated_scenes(tmp_path, monkeypatch):
    root = write_synthetic_dataset(tmp_path / "scenes", num=4, seed=2, size=64, progress=False)
    ring, circle = CLASSES.index("ring"), CLASSES.index("circle")
    monkeypatch.setattr("synseg_core.evaluate.build_segmenter",
                        lambda args, device: segmenter_on(GroundTruthBackend(root, {ring: circle})))  # rings read as circles
    out = tmp_path / "out"
    assert evaluate_main(["-c", str(tmp_path / "oracle"), "--dataset", "folder", "--data-root", str(root),
                          "--protocol", "synthetic", "--out", str(out), "--quiet"]) == 0

    masks = np.stack([np.asarray(Image.open(path)) for path in sorted((root / "masks").glob("*.png"))])
    pixels = np.bincount(masks.ravel(), minlength=len(CLASSES))
    assert pixels[ring] > 0 and pixels[circle] > 0  # the scenes hold the confused pair
    expected = {name: 100.0 if count else None for name, count in zip(CLASSES, pixels, strict=True)}  # None: absent, no IoU
    circle_iou = pixels[circle] / (pixels[circle] + pixels[ring])
    expected |= {"ring": 0.0, "circle": round(100 * circle_iou, 2)}
    present = int((pixels > 0).sum())
    results = json.loads((out / "results.json").read_text())
    assert results["per_class_iou"] == expected
    assert results["miou"] == round(100 * (present - 2 + circle_iou) / present, 2)
    assert results["pixel_accuracy"] == round(100 * (pixels.sum() - pixels[ring]) / pixels.sum(), 2)
    assert results["num_images"] == 4 and results["protocol"]["name"] == "synthetic"
    assert "| circle | " + f"{100 * circle_iou:.2f} |" in (out / "results.md").read_text()
    assert Image.open(out / "class_iou.png").size[0] > 100
    assert Image.open(out / "overlays.png").size[1] > 4 * 160  # one row per scene


def test_cli_refuses_a_dataset_without_labelled_pixels(tiny_checkpoint, tmp_path, caplog):
    unlabelled = np.full((32, 32), 255, np.uint8)
    root = write_folder(tmp_path / "data", ["sky", "cat", "dog"], [unlabelled] * 2)
    assert cli(tiny_checkpoint, root, tmp_path / "out") == 2
    assert f"segmentation folder {root}" in caplog.text and "no labelled pixel" in caplog.text
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_refuses_a_mask_whose_size_differs_from_its_image(tiny_checkpoint, tmp_path, caplog):
    root = write_folder(tmp_path / "data", ["sky", "cat", "dog"], [quadrant_mask()] * 2)
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(root / "masks" / "1.png")
    assert cli(tiny_checkpoint, root, tmp_path / "out") == 2
    assert "1.png" in caplog.text and "differs from image" in caplog.text
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_refuses_mask_values_not_named_in_classes_txt(tiny_checkpoint, tmp_path, caplog):
    root = write_folder(tmp_path / "data", ["sky", "cat", "dog"], [quadrant_mask(), quadrant_mask() + 1])  # 3 has no name
    assert cli(tiny_checkpoint, root, tmp_path / "out") == 2
    assert "1.png" in caplog.text and "[3]" in caplog.text


def test_cli_refuses_a_corrupt_image(tiny_checkpoint, tmp_path, caplog):
    root = write_folder(tmp_path / "data", ["sky", "cat", "dog"], [quadrant_mask()] * 2)
    (root / "images" / "0.png").write_bytes(b"not a png")
    assert cli(tiny_checkpoint, root, tmp_path / "out") == 2
    assert "0.png" in caplog.text and "cannot read image" in caplog.text


def test_pamr_protocol_refines_every_window_and_keeps_a_clean_answer(tmp_path):
    dataset = get_dataset("folder", write_folder(tmp_path, ["background", "cat", "dog"], [quadrant_mask()]))
    with_pamr = get_protocol("synthetic", short_side=0, crop=16, stride=8, pamr=True)
    with pytest.raises(ValueError, match="asks for PAMR"):
        SlidingWindow(fake_segmenter({1: 0, 2: 1}), with_pamr)
    calls = []

    def counting_pamr(pixels, scores):
        calls.append(pixels.shape[0])
        return pamr_refiner()(pixels, scores)

    evaluation = evaluate_dataset(SlidingWindow(fake_segmenter({1: 0, 2: 1}), with_pamr, refine=counting_pamr), dataset, progress=False)
    assert sum(calls) == 9  # 3x3 windows of 16 px, stride 8, on 32x32
    assert with_pamr.background_threshold == 0.4
    assert evaluation.scores.miou == 1.0
