"""The messages one segmented frame turns into, for rclpy and rosbags message classes alike.

The node builds them from rclpy's generated classes and publishes them; the bag tool builds the same
messages from rosbags' classes and writes them. `MessageTypes` carries the classes of either world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .image_codec import image_fields
from .labels import LabelMap


@dataclass(frozen=True)
class MessageTypes:
    Image: Any
    LabelClass: Any
    LabelInfo: Any
    Segmentation: Any
    pack: Callable[[np.ndarray], Any]  # flat uint8 array -> what a uint8[] field takes


def image_message(types: MessageTypes, header: Any, array: np.ndarray, encoding: str) -> Any:
    fields = image_fields(array, encoding)
    fields["data"] = types.pack(fields["data"])
    return types.Image(header=header, **fields)


def empty_image(types: MessageTypes, header: Any) -> Any:
    return types.Image(
        header=header, height=0, width=0, encoding="", is_bigendian=0, step=0,
        data=types.pack(np.zeros(0, np.uint8)),
    )


def label_classes(types: MessageTypes, label_map: LabelMap) -> list[Any]:
    return [
        types.LabelClass(id=i, name=word, color=np.array(colour, dtype=np.uint8))
        for i, word, colour in label_map.classes()
    ]


def label_info_message(
    types: MessageTypes, header: Any, label_map: LabelMap, threshold: float, prompt_templates: str
) -> Any:
    return types.LabelInfo(
        header=header,
        vocabulary_version=label_map.version,
        threshold=float(threshold),
        unlabeled=label_map.unlabeled,
        prompt_templates=prompt_templates,
        classes=label_classes(types, label_map),
    )


def segmentation_message(
    types: MessageTypes,
    header: Any,
    label_map: LabelMap,
    threshold: float,
    labels: Any,
    confidence: Any | None,
) -> Any:
    """Bundle a label image (and optionally confidence) with the names its ids stand for."""
    return types.Segmentation(
        header=header,
        vocabulary_version=label_map.version,
        threshold=float(threshold),
        unlabeled=label_map.unlabeled,
        labels=labels,
        confidence=empty_image(types, header) if confidence is None else confidence,
        classes=label_classes(types, label_map),
    )
