"""Vocabulary checks, stable ids across vocabulary changes, and the label image encoding."""

from __future__ import annotations

import numpy as np
import pytest

from synseg_core.visualize import colour_for
from synseg_ros.labels import LabelMap, parse_vocabulary


def test_vocabulary_words_are_stripped():
    assert parse_vocabulary([" door", "chair "]) == ("door", "chair")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([], "empty"),
        ([False], "must be strings, got False"),
        ("door, chair", "list of words such as \\[door, chair\\], got str"),
        (42, "got int"),
        (["door", " "], "empty word"),
        (["door", "chair", "door"], "repeats \\['door'\\]"),
        (["a", "b", "c"], "3 words; at most 2"),
        (["door", "x" * 101], "has 101 characters, at most 100 are allowed"),
        (None, "vocabulary is empty"),  # `vocabulary: []` in a params file: rclpy leaves it NOT_SET
    ],
)
def test_bad_vocabularies_are_rejected_with_the_reason(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_vocabulary(value, max_words=2)


def test_a_word_of_100_characters_is_accepted():
    assert parse_vocabulary(["x" * 100]) == ("x" * 100,)


def test_a_new_map_numbers_words_in_order():
    label_map = LabelMap.create(["door", "chair"])
    assert (label_map.ids, label_map.version, label_map.encoding, label_map.unlabeled) == ((0, 1), 1, "mono8", 255)


def test_words_that_stay_keep_their_id_and_new_words_fill_the_lowest_free_ids():
    before = LabelMap.create(["door", "chair", "table"])
    after = before.with_words(["lamp", "table", "window", "chair"])
    assert dict(zip(after.words, after.ids, strict=True)) == {"lamp": 0, "table": 2, "window": 3, "chair": 1}
    assert after.version == 2


def test_the_same_words_in_another_order_are_the_same_map():
    before = LabelMap.create(["door", "chair"])
    assert before.with_words(["chair", "door"]) is before


def test_label_images_hold_ids_and_255_for_unlabeled():
    label_map = LabelMap.create(["door", "chair", "table"]).with_words(["table", "lamp"])
    table, lamp = label_map.words.index("table"), label_map.words.index("lamp")
    encoded = label_map.encode(np.array([[table, lamp, -1]], np.int32))
    assert encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded, [[2, 0, 255]])


def test_label_images_of_contiguous_ids_hold_ids_and_255_for_unlabeled():
    label_map = LabelMap.create(["door", "chair", "table"]).with_words(["table", "lamp", "door"])
    assert label_map.words == ("door", "lamp", "table")
    np.testing.assert_array_equal(label_map.encode(np.array([[2, 1, 0, -1]], np.int32)), [[2, 1, 0, 255]])


def test_more_than_254_words_switch_to_16_bit_labels():
    label_map = LabelMap.create([f"thing {i}" for i in range(255)])
    assert (label_map.encoding, label_map.unlabeled) == ("16UC1", 65535)
    encoded = label_map.encode(np.array([[254, -1]], np.int32))
    assert encoded.dtype == np.uint16
    np.testing.assert_array_equal(encoded, [[254, 65535]])


def test_254_words_still_fit_mono8():
    assert LabelMap.create([f"thing {i}" for i in range(254)]).encoding == "mono8"


def test_classes_list_id_word_and_the_word_colour_by_id():
    label_map = LabelMap.create(["door", "chair"]).with_words(["chair", "lamp"])
    assert label_map.classes() == [(0, "lamp", colour_for("lamp")), (1, "chair", colour_for("chair"))]
