"""Confusion-matrix metrics: exact counts, ignore pixels excluded, NaN for classes that never occur."""
import math

import numpy as np
import pytest

from synseg_core.evaluation.metrics import scores_from_confusion, update_confusion


def test_confusion_counts_ground_truth_rows_and_prediction_columns():
    confusion = np.zeros((3, 3), np.int64)
    update_confusion(confusion, np.array([[0, 1], [1, 2]]), np.array([[0, 1], [2, 2]]))
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_ignore_pixels_are_not_counted():
    confusion = np.zeros((2, 2), np.int64)
    update_confusion(confusion, np.array([1, 1, 0]), np.array([-1, 1, -1]))
    assert confusion.tolist() == [[0, 0], [0, 1]]


def test_miou_pixel_accuracy_and_per_class_iou_of_a_known_matrix():
    # class 0: 4 right; class 1: 2 right, 2 predicted as 0 -> IoU0 = 4/6, IoU1 = 2/4
    scores = scores_from_confusion(np.array([[4, 0], [2, 2]]))
    assert scores.iou.tolist() == pytest.approx([4 / 6, 0.5])
    assert scores.miou == pytest.approx((4 / 6 + 0.5) / 2)
    assert scores.pixel_accuracy == pytest.approx(6 / 8)
    assert scores.labelled_pixels == 8


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_the_mean():
    scores = scores_from_confusion(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]))
    assert math.isnan(scores.iou[2])
    assert scores.miou == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_ground_truth_value_outside_the_classes_is_an_error():
    with pytest.raises(ValueError, match="ground-truth value 5 is outside 0..2"):
        update_confusion(np.zeros((3, 3), np.int64), np.zeros(4, np.int64), np.array([0, 1, 5, 2]))


def test_prediction_and_truth_of_different_sizes_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        update_confusion(np.zeros((2, 2), np.int64), np.zeros((4, 4), np.int64), np.zeros((4, 5), np.int64))
