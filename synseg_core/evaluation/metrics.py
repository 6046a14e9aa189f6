"""Segmentation metrics from an exact integer confusion matrix.

Counts are int64, so sums over images, shards and processes are exact: a
distributed evaluation reduces the matrices and gets bit-identical metrics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synseg_core.data.segmentation import IGNORE_INDEX


@dataclass(frozen=True)
class Scores:
    """Metrics of one evaluation. IoU of a class absent from both ground truth and prediction is NaN."""

    miou: float  # mean over classes with a defined IoU (NaN-mean, as mmseg)
    iou: np.ndarray  # [C] float64 per-class IoU
    pixel_accuracy: float  # correct / labelled pixels
    class_accuracy: np.ndarray  # [C] float64 recall per class (NaN where the class never occurs)
    labelled_pixels: int


def update_confusion(confusion: np.ndarray, prediction: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> None:
    """Add one image to ``confusion`` [C, C] (rows: ground truth, columns: prediction), in place.

    ``target`` pixels equal to ``ignore_index`` are skipped. Any other target or
    prediction value outside 0..C-1 raises: it would silently distort the scores.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {target.shape} differ in size")
    classes = confusion.shape[0]
    keep = target != ignore_index
    truth = target[keep].astype(np.int64)
    predicted = prediction[keep].astype(np.int64)
    if truth.size and (truth.min() < 0 or truth.max() >= classes):
        raise ValueError(f"ground-truth value {int(truth.max() if truth.max() >= classes else truth.min())} is outside 0..{classes - 1} (and not the ignore index {ignore_index})")
    if predicted.size and (predicted.min() < 0 or predicted.max() >= classes):
        raise ValueError(f"predicted value outside 0..{classes - 1}")
    confusion += np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def scores_from_confusion(confusion: np.ndarray) -> Scores:
    """mIoU, per-class IoU and pixel accuracy of a [C, C] confusion matrix."""
    confusion = confusion.astype(np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    per_truth = confusion.sum(axis=1).astype(np.float64)
    per_prediction = confusion.sum(axis=0).astype(np.float64)
    union = per_truth + per_prediction - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(per_truth > 0, true_positive / per_truth, np.nan)
    labelled = int(confusion.sum())
    defined = ~np.isnan(iou)
    return Scores(
        miou=float(iou[defined].mean()) if defined.any() else float("nan"),
        iou=iou,
        pixel_accuracy=float(true_positive.sum() / labelled) if labelled else float("nan"),
        class_accuracy=class_accuracy,
        labelled_pixels=labelled,
    )
