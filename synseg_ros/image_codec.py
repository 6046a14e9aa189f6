"""sensor_msgs/Image and CompressedImage <-> numpy, for every common camera encoding.

ROS-free: works on any object with the fields of the messages (rclpy messages and rosbags
dataclasses alike), so the node and the offline bag tool share it. Decoding reads a NumPy view over
`msg.data` (no cv_bridge), honouring `step` padding and `is_bigendian`, and makes one RGB copy.
"""

from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an RGB image; the text says why."""


# encoding -> (channels, bytes per channel, OpenCV conversion to RGB or None when already RGB)
_LAYOUTS: dict[str, tuple[int, int, int | None]] = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "rgb16": (3, 2, None),
    "bgr16": (3, 2, cv2.COLOR_BGR2RGB),
    "rgba16": (4, 2, cv2.COLOR_RGBA2RGB),
    "bgra16": (4, 2, cv2.COLOR_BGRA2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    # 4:2:2 packs two pixels in four bytes; `yuv422` is the old name of UYVY, `yuv422_yuy2` of YUYV.
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    # OpenCV names a Bayer pattern after the second row's first two pixels: ROS rggb is OpenCV "BG".
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
    "bayer_rggb16": (1, 2, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr16": (1, 2, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg16": (1, 2, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg16": (1, 2, cv2.COLOR_BayerGB2RGB),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(sorted(_LAYOUTS))

_OUTPUT_LAYOUTS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "rgb8": (np.dtype(np.uint8), 3),
}


def decode_image(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/Image into RGB uint8 [H, W, 3].

    16-bit encodings keep their high byte. Raises ImageDecodeError for an unsupported encoding or a
    message whose sizes do not add up.
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, depth, conversion = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageDecodeError(f"empty image ({width}x{height})")
    if channels == 2 and width % 2:
        raise ImageDecodeError(f"{msg.encoding} needs an even width, got {width}")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width {width} x {channels * depth} bytes per pixel"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ImageDecodeError(
            f"data has {data.size} bytes, step {step} x height {height} needs {step * height}"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        pixels = rows.view(">u2" if msg.is_bigendian else "<u2")
        pixels = (pixels >> 8).astype(np.uint8)
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    if channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def decode_compressed(msg: Any) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG, PNG, ...) into RGB uint8 [H, W, 3]."""
    if "compresseddepth" in msg.format.lower().replace(" ", ""):
        raise ImageDecodeError(f"unsupported compressed format '{msg.format}' (a depth image)")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if bgr is None:
        raise ImageDecodeError(
            f"cannot decode {buffer.size} bytes of compressed image (format '{msg.format}')"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The sensor_msgs/Image fields for `array` (tightly packed, native byte order).

    `data` is a flat uint8 view; the caller turns it into what its message type wants.
    """
    dtype, channels = _OUTPUT_LAYOUTS[encoding]
    if array.dtype != dtype or array.ndim != (2 if channels == 1 else 3):
        raise ValueError(f"{encoding} needs a {dtype} array, got {array.dtype} {array.shape}")
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": int(sys.byteorder == "big" and dtype.itemsize > 1),
        "step": width * channels * dtype.itemsize,
        "data": array.reshape(-1).view(np.uint8),
    }
