"""Evaluation outputs: ``results.json``, a Markdown table, a per-class IoU bar chart and an overlay grid.

Every file is written atomically (temporary file + rename), so an interrupted
run never leaves a truncated result behind.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from synseg_core.checkpoint import _atomic_write
from synseg_core.evaluation.runner import Evaluation, Example
from synseg_core.runtime.processing import UNLABELED
from synseg_core.visualize import add_legend, colourise

IGNORE_COLOUR = (255, 255, 255)  # ground-truth pixels that are not scored


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else round(100.0 * value, 2)


def results_dict(evaluation: Evaluation, settings: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to trust and reproduce a number: the settings, the metrics (in %) and the confusion matrix."""
    scores = evaluation.scores
    return {
        **settings,
        "num_images": evaluation.num_images,
        "num_classes": len(evaluation.class_names),
        "background_class": None if evaluation.background_index is None else evaluation.class_names[evaluation.background_index],
        "miou": _percent(scores.miou),
        "pixel_accuracy": _percent(scores.pixel_accuracy),
        "per_class_iou": {name: _percent(v) for name, v in zip(evaluation.class_names, scores.iou, strict=True)},
        "confusion": evaluation.confusion.tolist(),
    }


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def markdown_report(results: dict[str, Any]) -> str:
    """A self-describing Markdown summary plus the per-class IoU table."""
    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    background = results["background_class"]
    lines = [
        f"# {results['method']} on {results['dataset']}",
        "",
        f"- model: `{results['model']}` ({results['backend']} backend)",
        f"- dataset: {results['dataset']} ({results['num_classes']} classes, "
        + (f"background class '{background}' scored by a constant map" if background else "no background class")
        + f"), {results['num_images']} images",
        f"- {results['protocol_description']}",
        "",
        "| mIoU | pixel accuracy |",
        "|---:|---:|",
        f"| {show(results['miou'])} | {show(results['pixel_accuracy'])} |",
        "",
        "| class | IoU |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {show(value)} |" for name, value in results["per_class_iou"].items()]
    return "\n".join(lines) + "\n"


def _write_png(path: Path, rgb: np.ndarray) -> None:
    def write(tmp: str) -> None:
        ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        Path(tmp).write_bytes(data.tobytes())

    _atomic_write(path, write)


def plot_class_iou(path: Path, class_names: Sequence[str], iou: np.ndarray, title: str) -> None:
    """Horizontal bar chart of per-class IoU (%) with the mIoU as a dashed line; n/a classes are left empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.nan_to_num(100.0 * np.asarray(iou, np.float64), nan=0.0)
    height = max(2.5, 0.22 * len(class_names) + 1.0)
    figure, axis = plt.subplots(figsize=(7, height))
    positions = np.arange(len(class_names))
    axis.barh(positions, values, color="#4C72B0")
    axis.set_yticks(positions, labels=list(class_names), fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("IoU (%)")
    defined = ~np.isnan(np.asarray(iou, np.float64))
    if defined.any():
        axis.axvline(100.0 * float(np.asarray(iou)[defined].mean()), color="#C44E52", linestyle="--", label="mIoU")
        axis.legend(loc="lower right")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()

    def write(tmp: str) -> None:
        figure.savefig(tmp, format="png", dpi=100)

    try:
        _atomic_write(path, write)
    finally:
        plt.close(figure)


def _label_colours(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Class ids -> RGB in the project's stable word colours; ignore (-1) pixels white."""
    rgb = colourise(np.where(labels < 0, UNLABELED, labels).astype(np.int64), class_names)
    rgb[labels < 0] = IGNORE_COLOUR
    return rgb


def overlay_grid(examples: Sequence[Example], class_names: Sequence[str], tile: int = 160) -> np.ndarray:
    """One row per example: image | ground truth | prediction, each scaled to ``tile`` pixels high, and a colour
    legend of the classes shown on the right. RGB uint8."""
    rows = []
    for example in examples:
        panels = [example.image, _label_colours(example.truth, class_names), _label_colours(example.prediction, class_names)]
        height, width = example.image.shape[:2]
        size = (max(1, round(width * tile / height)), tile)
        resized = [cv2.resize(p, size, interpolation=cv2.INTER_LINEAR if i == 0 else cv2.INTER_NEAREST) for i, p in enumerate(panels)]
        gap = np.full((tile, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([resized[0], gap, resized[1], gap, resized[2]], axis=1))
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 4), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    header = np.full((22, width, 3), 255, np.uint8)
    third = rows[0].shape[1] // 3
    for n, title in enumerate(("image", "ground truth", "prediction")):
        cv2.putText(header, title, (n * third + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    shown = np.unique(np.concatenate([np.concatenate([e.truth.ravel(), e.prediction.ravel()]) for e in examples]))
    return add_legend(np.concatenate([header, *padded], axis=0), class_names, [int(i) for i in shown if i >= 0])


def write_report(out: Path, evaluation: Evaluation, settings: dict[str, Any]) -> dict[str, Any]:
    """Write results.json, results.md, class_iou.png and (with examples) overlays.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = results_dict(evaluation, settings)
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown_report(results))
    miou = "n/a" if results["miou"] is None else f"{results['miou']:.2f}"
    plot_class_iou(out / "class_iou.png", evaluation.class_names, evaluation.scores.iou,
                   f"{settings['method']} on {settings['dataset']}: mIoU {miou} ({settings['protocol']['name']})")
    if evaluation.examples:
        _write_png(out / "overlays.png", overlay_grid(evaluation.examples, evaluation.class_names))
    return results
