"""Colours, legends and the overlay: a word's colour comes from the word alone; the legend shows the words present."""
from __future__ import annotations

import json

import cv2
import numpy as np

from synseg_core import UNLABELED
from synseg_core.segment import main as segment_main
from synseg_core.visualize import add_legend, colour_for, colourise, palette


def test_a_word_keeps_its_colour_wherever_it_stands_in_the_vocabulary():
    assert palette(["door", "chair", "floor"])[0].tolist() == palette(["floor", "chair", "door"])[2].tolist()
    labels = np.array([[0, 1]])
    swapped = colourise(labels, ["door", "chair"])[0, ::-1]
    assert swapped.tolist() == colourise(labels, ["chair", "door"])[0].tolist()
    assert colour_for("Door ") == colour_for("door")


def test_different_words_get_different_colours():
    words = ["door", "chair", "floor", "wall", "table", "lamp"]
    assert len({colour_for(w) for w in words}) == len(words)


def test_colourise_paints_unlabeled_pixels_black():
    out = colourise(np.array([[UNLABELED, 0]]), ["door"])
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == list(colour_for("door"))


def swatch_colours(canvas, image_width, rows):
    """The colour at the centre of each legend row's swatch (swatches: 14 px squares at x 6..20, rows 18 px apart)."""
    return [tuple(int(c) for c in canvas[6 + 18 * row + 7, image_width + 6 + 7]) for row in range(rows)]


def test_the_legend_lists_the_present_words_in_order_with_their_colours():
    image = np.zeros((20, 30, 3), np.uint8)
    vocabulary = ["door", "chair", "floor"]
    canvas = add_legend(image, vocabulary, present=[2, 0])
    assert canvas.shape[0] >= 20 and canvas.shape[1] > 30
    assert np.array_equal(canvas[:20, :30], image)  # the image itself is untouched
    assert swatch_colours(canvas, 30, 2) == [colour_for("floor"), colour_for("door")]
    legend = canvas[:, 30:].reshape(-1, 3)
    assert not (legend == colour_for("chair")).all(axis=1).any()  # an absent word gets no row
    text = canvas[6 + 18 * 0: 6 + 18 * 2, 30 + 26:]
    assert (text < 128).all(axis=2).any(axis=1).sum() > 10  # dark text rows beside the swatches


def test_without_present_the_legend_lists_the_whole_vocabulary():
    canvas = add_legend(np.zeros((8, 8, 3), np.uint8), ["door", "chair"])
    assert swatch_colours(canvas, 8, 2) == [colour_for("door"), colour_for("chair")]


def test_the_overlay_written_by_segment_carries_the_legend_of_the_words_found(tmp_path, tiny_checkpoint):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    out = tmp_path / "out"
    vocabulary = ["door", "chair", "floor"]
    assert segment_main([str(image), "-v", ",".join(vocabulary), "-c", str(tiny_checkpoint), "-o", str(out), "--threshold", "0", "-q"]) == 0
    found = list(json.loads((out / "scene_labels.json").read_text())["pixel_fraction"])
    overlay = cv2.cvtColor(cv2.imread(str(out / "scene_overlay.png")), cv2.COLOR_BGR2RGB)
    assert found and swatch_colours(overlay, 60, len(found)) == [colour_for(w) for w in found]
