"""Every common camera encoding decodes to the RGB image the camera saw."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from synseg_ros.image_codec import ImageDecodeError, decode_compressed, decode_image, image_fields

RGB = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


def image(encoding: str, pixels: np.ndarray, *, step: int | None = None, bigendian: bool = False, pad: int = 0):
    """An Image-like message whose rows are `pixels` bytes followed by `pad` junk bytes."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    width = pixels.shape[1] // 2 if encoding in ("uyvy", "yuv422", "yuyv", "yuv422_yuy2") else pixels.shape[1]
    return SimpleNamespace(
        encoding=encoding,
        height=height,
        width=width,
        step=rows.shape[1] if step is None else step,
        is_bigendian=int(bigendian),
        data=rows.tobytes(),
    )


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[:, :, ::-1]),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
        ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_decode_exactly(encoding, pixels):
    np.testing.assert_array_equal(decode_image(image(encoding, np.ascontiguousarray(pixels))), RGB)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize(("encoding", "order"), [("rgb16", [0, 1, 2]), ("bgr16", [2, 1, 0])])
def test_16_bit_colour_keeps_the_high_byte_in_either_byte_order(encoding, order, bigendian):
    wide = (RGB[:, :, order].astype(np.uint16) << 8) | 0x5A  # low byte must not matter
    wide = wide.astype(">u2" if bigendian else "<u2")
    np.testing.assert_array_equal(decode_image(image(encoding, wide, bigendian=bigendian)), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[:, :, 0]
    np.testing.assert_array_equal(decode_image(image("mono8", grey)), np.dstack([grey] * 3))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_honours_is_bigendian(bigendian):
    grey = RGB[:, :, 1]
    wide = ((grey.astype(np.uint16) << 8) | 0xFF).astype(">u2" if bigendian else "<u2")
    np.testing.assert_array_equal(decode_image(image("mono16", wide, bigendian=bigendian)), np.dstack([grey] * 3))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("depth", [8, 16])
def test_bayer_patterns_recover_a_flat_colour(pattern, depth):
    colour = {"r": 200, "g": 120, "b": 40}
    mosaic = np.zeros((8, 10), np.uint16 if depth == 16 else np.uint8)
    for index, channel in enumerate(pattern):
        value = colour[channel] << 8 if depth == 16 else colour[channel]
        mosaic[index // 2 :: 2, index % 2 :: 2] = value
    rgb = decode_image(image(f"bayer_{pattern}{depth}", mosaic))
    np.testing.assert_array_equal(rgb[3, 4], [200, 120, 40])


def yuv_of(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing Y, U, V of RGB pixels, as cameras produce them."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return np.clip(np.round(np.stack([y, u, v], -1)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")],
)
def test_yuv422_packings_decode_to_the_colour(encoding, order):
    # Pairs of equal pixels, so 4:2:2 chroma sharing loses nothing.
    rgb = np.repeat(RGB[:, :4], 2, axis=1)
    yuv = yuv_of(rgb)
    y, u, v = yuv[..., 0], yuv[:, 0::2, 1], yuv[:, 0::2, 2]
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u, "V": v}
    names = ["U", "Y0", "V", "Y1"] if order == "UYVY" else ["Y0", "U", "Y1", "V"]
    packed = np.stack([planes[n] for n in names], -1).reshape(rgb.shape[0], -1)
    decoded = decode_image(image(encoding, packed))
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).max() <= 3


def test_row_padding_in_step_is_skipped():
    padded = image("rgb8", RGB, pad=13)
    assert padded.step == RGB.shape[1] * 3 + 13
    np.testing.assert_array_equal(decode_image(padded), RGB)


def test_unsupported_encoding_is_named_in_the_error():
    with pytest.raises(ImageDecodeError, match="unsupported encoding 'nv12'.*rgb8"):
        decode_image(image("nv12", RGB))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (image("rgb8", RGB, step=10), "step 10 is smaller than width 8 x 3"),
        (SimpleNamespace(**{**vars(image("rgb8", RGB)), "data": b"\0" * 50}), "data has 50 bytes"),
        (SimpleNamespace(**{**vars(image("rgb8", RGB)), "height": 0}), "empty image"),
        (SimpleNamespace(**{**vars(image("yuyv", RGB[:, :6, :2].copy())), "width": 3}), "even width"),
    ],
)
def test_malformed_messages_raise_with_the_reason(message, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(message)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(extension):
    flat = np.zeros((16, 16, 3), np.uint8)
    flat[:] = (200, 40, 90)
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(flat, cv2.COLOR_RGB2BGR))
    assert ok
    decoded = decode_compressed(SimpleNamespace(format=f"rgb8; {extension[1:]} compressed bgr8", data=encoded.tobytes()))
    assert np.abs(decoded.astype(int) - flat).max() <= 3


def test_compressed_depth_and_garbage_are_rejected():
    with pytest.raises(ImageDecodeError, match="depth"):
        decode_compressed(SimpleNamespace(format="16UC1; compressedDepth png", data=b"1234"))
    with pytest.raises(ImageDecodeError, match="cannot decode 4 bytes"):
        decode_compressed(SimpleNamespace(format="jpeg", data=b"1234"))


@pytest.mark.parametrize(
    ("array", "encoding", "step"),
    [
        (np.array([[0, 1, 255]], np.uint8), "mono8", 3),
        (np.array([[0, 1, 65535]], np.uint16), "16UC1", 6),
        (np.array([[0.5, 1.0]], np.float32), "32FC1", 8),
        (RGB, "rgb8", 24),
    ],
)
def test_image_fields_describe_the_array_and_decode_back(array, encoding, step):
    fields = image_fields(array, encoding)
    assert (fields["height"], fields["width"], fields["encoding"], fields["step"]) == (
        array.shape[0], array.shape[1], encoding, step,
    )
    assert fields["is_bigendian"] == 0
    np.testing.assert_array_equal(fields["data"].view(array.dtype).reshape(array.shape), array)


def test_image_fields_refuse_an_array_of_the_wrong_type():
    with pytest.raises(ValueError, match="mono8 needs a uint8"):
        image_fields(np.zeros((2, 2), np.int32), "mono8")
