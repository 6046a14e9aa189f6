"""The synseg node in its own process, driven over real DDS the way a robot uses it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import SynsegClient, image_msg, make_rgb, next_header, stamp_of, values_of
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import Image
from synseg_ros.srv import Segment

from synseg_ros.node import MESSAGES

RGB = make_rgb(48, 64)


def pixels(msg) -> np.ndarray:
    dtype = {"mono8": np.uint8, "16UC1": np.uint16, "32FC1": np.float32, "rgb8": np.uint8}[msg.encoding]
    flat = np.frombuffer(msg.data, dtype)
    return flat.reshape(msg.height, msg.width, -1).squeeze(-1) if msg.encoding != "rgb8" else flat.reshape(
        msg.height, msg.width, 3
    )


def set_applied(client: SynsegClient, name: str, text: str, shows: Callable[[Any], bool] = lambda info: True):
    """Set a parameter like `ros2 param set`, wait until the node has applied it (it republishes
    label_info then) and return that label_info: the latest that `shows` the change, so one still
    on its way from an earlier change is not taken for it."""
    seen = len(client.label_info)
    result = client.set(name, text)
    assert result.successful, result.reason

    def showing() -> list[Any]:
        return [info for info in client.label_info[seen:] if shows(info)]

    client.probe.spin_until(lambda: bool(showing()), 20, f"label_info after setting {name}")
    return showing()[-1]


def set_vocabulary(client: SynsegClient, text: str):
    words = set(yaml.safe_load(text))
    return set_applied(client, "vocabulary", text, lambda info: {c.name for c in info.classes} == words)


def id_map(msg) -> dict[str, int]:
    return {c.name: c.id for c in msg.classes}


def camera_image(encoding: str, height: int, width: int, pad: int = 0) -> Image:
    """A random picture as a camera would send it in `encoding`, rows padded with `pad` bytes."""
    rgb = make_rgb(height, width, seed=height)
    bigendian = 0
    if encoding == "bgr8":
        array = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        array = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    elif encoding == "mono16":
        array, bigendian = (rgb[:, :, 0].astype(np.uint16) << 8).astype(">u2"), 1
    elif encoding == "yuv422_yuy2":
        array = rgb[:, :, :2]  # any bytes are a valid YUYV picture
    elif encoding == "bayer_grbg8":
        array = rgb[:, :, 1]
    else:
        array = rgb
    rows = np.ascontiguousarray(array).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    return Image(
        header=next_header(), height=height, width=width, encoding=encoding, is_bigendian=bigendian,
        step=rows.shape[1], data=MESSAGES.pack(rows.reshape(-1)),
    )


@pytest.mark.parametrize(
    ("encoding", "height", "width", "pad"),
    [
        ("rgb8", 480, 640, 0),
        ("bgr8", 37, 50, 6),
        ("rgba8", 5, 7, 0),
        ("mono16", 24, 32, 0),
        ("yuv422_yuy2", 48, 64, 0),
        ("bayer_grbg8", 60, 80, 4),
    ],
)
def test_every_frame_comes_back_as_a_mask_at_input_size_with_the_input_header(client, encoding, height, width, pad):
    msg = camera_image(encoding, height, width, pad)
    out = client.send(msg)
    for output in (out.labels, out.confidence, out.segmentation):
        assert output.header.stamp == msg.header.stamp
        assert output.header.frame_id == "camera_optical_frame"
    assert (out.labels.encoding, out.labels.height, out.labels.width, out.labels.step) == ("mono8", height, width, width)
    ids = set(id_map(out.segmentation).values())
    assert set(np.unique(pixels(out.labels))) <= ids | {255}
    confidence = pixels(out.confidence)
    assert out.confidence.encoding == "32FC1" and confidence.shape == (height, width)
    assert 0.0 <= confidence.min() and confidence.max() <= 1.0


def test_segmentation_bundles_the_mask_with_its_names_and_vocabulary_version(client):
    info = set_vocabulary(client, "[kettle, mug]")
    out = client.send(image_msg(RGB, "rgb8"))
    seg = out.segmentation
    assert id_map(seg) == {"kettle": 0, "mug": 1} == id_map(info)
    assert seg.vocabulary_version == info.vocabulary_version
    assert (seg.unlabeled, seg.threshold) == (255, pytest.approx(0.5))
    assert bytes(seg.labels.data) == bytes(out.labels.data)
    assert bytes(seg.confidence.data) == bytes(out.confidence.data)


def test_overlay_is_an_rgb8_image_of_the_input_size(client):
    msg = image_msg(RGB, "rgb8")
    client.send(msg)
    client.probe.spin_until(
        lambda: any(m.header.stamp == msg.header.stamp for m in client.overlay), 10, "the overlay"
    )
    overlay = next(m for m in client.overlay if m.header.stamp == msg.header.stamp)
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", 48, 64)


def test_publish_confidence_false_stops_confidence_and_leaves_it_empty_in_segmentation(client):
    try:
        set_applied(client, "publish_confidence", "false")
        msg = image_msg(RGB, "rgb8")
        out = client.send(msg, outputs=("labels", "segmentation"))
        client.probe.spin_for(1.0)
        assert not any(stamp_of(m) == stamp_of(msg) for m in client.confidence)
        empty = out.segmentation.confidence
        assert (empty.height, empty.width, empty.encoding, len(empty.data)) == (0, 0, "", 0)
        assert out.segmentation.labels.width == 64
    finally:
        set_applied(client, "publish_confidence", "true")
    assert client.send(image_msg(RGB, "rgb8")).confidence.encoding == "32FC1"


def test_publish_overlay_false_stops_the_overlay_while_subscribed(client):
    try:
        set_applied(client, "publish_overlay", "false")
        msg = image_msg(RGB, "rgb8")
        client.send(msg)
        client.probe.spin_for(1.0)
        assert not any(stamp_of(m) == stamp_of(msg) for m in client.overlay)
    finally:
        set_applied(client, "publish_overlay", "true")


def test_prompt_templates_change_at_run_time_republishes_label_info_and_changes_the_scores(client):
    before = client.send(image_msg(RGB, "rgb8"))
    version = client.label_info[-1].vocabulary_version
    try:
        info = set_applied(client, "prompt_templates", "single", lambda info: info.prompt_templates == "single")
        assert info.vocabulary_version == version  # same words, same ids
        after = client.send(image_msg(RGB, "rgb8"))
        assert not np.array_equal(pixels(after.confidence), pixels(before.confidence))
    finally:
        set_applied(client, "prompt_templates", "tcl", lambda info: info.prompt_templates == "tcl")


def test_ros2_param_set_vocabulary_changes_label_info_and_masks_keeping_ids_of_words_that_stay(client):
    first = set_vocabulary(client, "[sofa, lamp]")
    assert id_map(first) == {"sofa": 0, "lamp": 1}
    assert client.get("vocabulary") == ["sofa", "lamp"]

    second = set_vocabulary(client, "[lamp, window, plant]")
    assert id_map(second) == {"window": 0, "lamp": 1, "plant": 2}
    assert second.vocabulary_version == first.vocabulary_version + 1
    assert second.header.stamp.sec > 0

    out = client.send(image_msg(RGB, "rgb8"))
    assert out.segmentation.vocabulary_version == second.vocabulary_version
    assert set(np.unique(pixels(out.labels))) <= {0, 1, 2, 255}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[]", "vocabulary is empty"),
        ("[door, door]", "repeats ['door']"),
        ("42", "must be a list of words"),
        ("[door, 3]", "must be a list of words"),
        ("['door', '  ']", "empty word"),
    ],
)
def test_bad_vocabularies_are_rejected_with_a_reason_and_the_node_keeps_publishing(client, text, reason):
    before = set_vocabulary(client, "[bench, bin]")
    result = client.set("vocabulary", text)
    assert not result.successful
    assert reason in result.reason
    assert client.get("vocabulary") == ["bench", "bin"]
    out = client.send(image_msg(RGB, "rgb8"))
    assert id_map(out.segmentation) == {"bench": 0, "bin": 1}
    assert client.label_info[-1].vocabulary_version == before.vocabulary_version


def test_a_very_long_word_is_rejected_and_not_logged_whole(client, synseg):
    set_vocabulary(client, "[bench, bin]")
    result = client.set("vocabulary", "[door, " + "x" * 10_000 + "]")
    assert not result.successful
    assert "has 10000 characters, at most 100 are allowed" in result.reason
    assert len(result.reason) < 200
    assert client.get("vocabulary") == ["bench", "bin"]
    client.probe.spin_for(0.5)
    assert "rejected parameters" in synseg.log and "x" * 200 not in synseg.log


def test_threshold_is_dynamic_and_out_of_range_values_are_rejected(client):
    try:
        assert client.set("threshold", "1.0").successful
        client.probe.spin_until(lambda: client.label_info[-1].threshold == 1.0, 10, "label_info threshold 1")
        assert set(np.unique(pixels(client.send(image_msg(RGB, "rgb8")).labels))) == {255}

        assert client.set("threshold", "0.0").successful
        assert 255 not in np.unique(pixels(client.send(image_msg(RGB, "rgb8")).labels))

        rejected = client.set("threshold", "1.5")
        assert not rejected.successful and "threshold" in rejected.reason
    finally:
        assert client.set("threshold", "0.5").successful


@pytest.mark.parametrize(
    ("name", "text", "reason", "kept"),
    [
        ("backend", "onnxruntime", "read-only", "torch"),
        ("prompt_templates", "fancy", "prompt_templates must be one of imagenet80, single, tcl, verbatim, got 'fancy'", "tcl"),
    ],
)
def test_read_only_parameters_and_unknown_choices_are_rejected_with_a_reason(client, name, text, reason, kept):
    result = client.set(name, text)
    assert not result.successful
    assert reason in result.reason
    assert client.get(name) == kept


def test_parameters_are_described_with_ranges_choices_and_read_only_flags(client):
    names = ["vocabulary", "threshold", "backend", "max_vocabulary_size"]
    described = client._call(client.parameters.describe_parameters(names)).descriptors
    descriptors = {d.name: d for d in described}
    assert descriptors["vocabulary"].dynamic_typing and not descriptors["vocabulary"].read_only
    threshold = descriptors["threshold"].floating_point_range[0]
    assert (threshold.from_value, threshold.to_value) == (0.0, 1.0)
    assert descriptors["backend"].read_only
    assert "One of: torch, onnxruntime, tensorrt." in descriptors["backend"].description
    assert descriptors["max_vocabulary_size"].integer_range[0].to_value == 1024


def test_more_than_254_words_give_16_bit_masks(client):
    try:
        info = set_vocabulary(client, "[" + ", ".join(f"item{i}" for i in range(255)) + "]")
        assert (info.unlabeled, len(info.classes)) == (65535, 255)
        out = client.send(image_msg(RGB, "rgb8"))
        assert (out.labels.encoding, out.labels.step) == ("16UC1", 128)
        assert set(np.unique(pixels(out.labels))) <= set(range(255)) | {65535}
    finally:
        assert set_vocabulary(client, "[door, chair]").unlabeled == 255


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("encoding", "nv12", "unsupported encoding 'nv12'"),
        ("step", 10, "step 10 is smaller than width 64"),
        ("height", 4800, "data has 9216 bytes"),
    ],
)
def test_bad_images_are_reported_in_diagnostics_and_the_node_keeps_running(client, field, value, reason):
    bad = image_msg(RGB, "rgb8")
    setattr(bad, field, value)
    bad_before = int(values_of(client.status(newer_than=time.time()))["bad_input"])
    since = time.time()
    client.images.publish(bad)

    def reported() -> bool:
        status = client.status(newer_than=since)
        return status.level == DiagnosticStatus.WARN and reason in status.message

    client.probe.spin_until(reported, 10, f"'{reason}' in diagnostics")
    assert int(values_of(client.status())["bad_input"]) == bad_before + 1
    assert client.send(image_msg(RGB, "rgb8")).labels.width == 64


def test_diagnostics_report_rates_latency_per_stage_backend_and_vocabulary(client):
    for _ in range(3):
        client.send(image_msg(RGB, "rgb8"))
    status = client.status(newer_than=time.time())
    values = values_of(status)
    assert status.level == DiagnosticStatus.OK
    assert status.hardware_id == "torch:cpu"
    assert (values["backend"], values["precision"], values["device"]) == ("torch", "fp32", "cpu")
    assert int(values["vocabulary_size"]) >= 1 and values["label_encoding"] == "mono8"
    assert int(values["frames_processed"]) >= 3 and float(values["output_rate_hz"]) > 0
    for stage in ("convert", "preprocess", "infer", "postprocess", "publish"):
        assert float(values[f"latency_{stage}_ms"]) > 0
    receive_to_publish = float(values["latency_receive_to_publish_ms"])
    assert receive_to_publish > float(values["latency_infer_ms"])
    assert 0 < float(values["latency_node_overhead_ms"]) < receive_to_publish


def test_segment_service_answers_one_query_with_its_own_vocabulary(client):
    before = client.label_info[-1]
    request = Segment.Request(image=image_msg(RGB, "rgb8"), vocabulary=["cat", "dog", "bird"], threshold=0.0)
    response = client.call_segment(request)
    assert response.success, response.message
    seg = response.segmentation
    assert id_map(seg) == {"cat": 0, "dog": 1, "bird": 2}
    assert seg.header == request.image.header
    labels = pixels(seg.labels)
    assert labels.shape == (48, 64) and set(np.unique(labels)) <= {0, 1, 2}
    assert client.label_info[-1].vocabulary_version == before.vocabulary_version


@pytest.mark.parametrize(
    ("vocabulary", "threshold", "reason"),
    [
        (["cat"], float("nan"), "threshold must be from 0 to 1 (or negative for the node's threshold), got nan"),
        (["cat"], 1.5, "threshold must be from 0 to 1 (or negative for the node's threshold), got 1.5"),
        (["cat", "y" * 10_000], 0.5, "has 10000 characters, at most 100 are allowed"),
    ],
)
def test_segment_service_rejects_a_bad_threshold_or_word(client, vocabulary, threshold, reason):
    request = Segment.Request(image=image_msg(RGB, "rgb8"), vocabulary=vocabulary, threshold=threshold)
    response = client.call_segment(request)
    assert not response.success
    assert reason in response.message


def test_segment_service_reports_a_bad_request(client):
    request = Segment.Request(image=image_msg(RGB, "rgb8"), vocabulary=["cat", "cat"])
    request.image.encoding = "nv21"
    response = client.call_segment(request)
    assert not response.success
    assert "unsupported encoding 'nv21'" in response.message


def test_a_flood_of_frames_is_dropped_not_queued(client, synseg):
    """A camera far faster than the model: latency stays flat, memory does not grow, drops are counted."""
    rgb = make_rgb(240, 320)
    client.labels.clear()
    client.send(image_msg(rgb, "rgb8"))
    rss_before = synseg.rss_kib()
    dropped_before = int(values_of(client.status(newer_than=time.time()))["frames_dropped"])
    latencies: list[tuple[float, float]] = []  # (when received, stamp -> received seconds)
    sent: dict[int, float] = {}
    start = time.monotonic()
    while time.monotonic() - start < 4.0:
        msg = image_msg(rgb, "rgb8", next_header())
        sent[msg.header.stamp.sec] = time.monotonic()
        client.images.publish(msg)
        client.probe.executor.spin_once(timeout_sec=0.002)
        while client.labels:
            out = client.labels.pop()
            if out.header.stamp.sec in sent:
                now = time.monotonic()
                latencies.append((now - start, now - sent[out.header.stamp.sec]))
    client.probe.spin_for(1.0)
    rss_after = synseg.rss_kib()
    values = values_of(client.status(newer_than=time.time()))

    assert len(sent) > 100, "the test could not publish fast enough to flood the node"
    assert len(latencies) >= 5
    assert int(values["frames_dropped"]) - dropped_before > len(sent) / 4
    early = np.median([lat for t, lat in latencies if t < 1.5])
    late = np.median([lat for t, lat in latencies if t > 2.5])
    assert late < max(2 * early, early + 0.25), f"latency grew from {early:.3f} s to {late:.3f} s"
    assert rss_after - rss_before < 64 * 1024, f"node memory grew by {(rss_after - rss_before) / 1024:.0f} MiB"
