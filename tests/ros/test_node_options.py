"""Start-up options of the node: compressed input, camera_info, reliable QoS, bad start-up parameters.

These nodes run in this test process (their own context and executor thread), still talking over
real DDS, which saves a second process start-up.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import yaml
from conftest import LATCHED, SynsegClient, in_process_node, make_rgb, next_header
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage
from synseg_ros.msg import LabelInfo

from synseg_ros.node import StartupError
from synseg_ros.settings import PARAMETERS, Settings
from synseg_ros.testing import REPO


@pytest.fixture(scope="module")
def compressed(model_dir, probe) -> Iterator[SynsegClient]:
    _, stop = in_process_node(
        model_dir, "synseg_compressed", input_transport="compressed", use_camera_info=True,
        image_reliability="reliable",
    )
    try:
        client = SynsegClient(
            probe, "synseg_compressed", "/synseg_compressed/camera/image/compressed", CompressedImage,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
        )
        client.camera_info = probe.collect(CameraInfo, "/synseg_compressed/camera_info")
        client.camera_info_pub = probe.node.create_publisher(CameraInfo, "/synseg_compressed/camera/camera_info", 10)
        yield client
    finally:
        stop()


def jpeg(rgb: np.ndarray) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=next_header(), format="rgb8; jpeg compressed bgr8", data=data.tobytes())


def test_compressed_images_are_segmented_at_their_decoded_size(compressed):
    msg = jpeg(make_rgb(30, 40))
    out = compressed.send(msg)
    assert (out.labels.encoding, out.labels.height, out.labels.width) == ("mono8", 30, 40)
    assert out.labels.header == msg.header


def test_the_latest_camera_info_is_republished_with_each_mask_header(compressed):
    info = CameraInfo(header=next_header(), height=30, width=40, k=[50.0, 0.0, 20.0, 0.0, 50.0, 15.0, 0.0, 0.0, 1.0])
    compressed.camera_info_pub.publish(info)
    compressed.probe.spin_for(0.5)
    msg = jpeg(make_rgb(30, 40, seed=1))
    compressed.send(msg)
    compressed.probe.spin_until(
        lambda: any(m.header == msg.header for m in compressed.camera_info), 10, "camera_info with the mask header"
    )
    republished = next(m for m in compressed.camera_info if m.header == msg.header)
    assert (republished.width, republished.height) == (40, 30)
    np.testing.assert_array_equal(republished.k, info.k)


def test_label_info_is_latched_for_late_subscribers(compressed, probe):
    late = probe.collect(LabelInfo, "/synseg_compressed/label_info", LATCHED)
    probe.spin_until(lambda: bool(late), 10, "the latched label_info")
    assert [c.name for c in late[-1].classes] == ["person", "chair", "table", "door"]


def test_the_params_file_documents_every_parameter_with_its_default():
    parameters = yaml.safe_load((REPO / "config" / "synseg.yaml").read_text())["/**"]["ros__parameters"]
    assert set(parameters) == {spec.name for spec in PARAMETERS}
    defaults = Settings()
    for name, value in parameters.items():
        expected = getattr(defaults, name)
        assert value == (list(expected) if isinstance(expected, tuple) else expected), name


def test_the_node_starts_from_the_params_file(model_dir):
    node, stop = in_process_node(
        model_dir, "synseg_params", params_file=REPO / "config" / "synseg.yaml", vocabulary=["cup"]
    )
    try:
        assert node.get_parameter("vocabulary").value == ["cup"]
        assert node.get_parameter("prompt_templates").value == "tcl"
        assert node.get_parameter("model_path").value == str(model_dir)
    finally:
        stop()


def test_an_empty_vocabulary_in_a_params_file_is_called_empty(model_dir, tmp_path):
    params = tmp_path / "empty.yaml"
    params.write_text("/**:\n  ros__parameters:\n    vocabulary: []\n")
    with pytest.raises(StartupError) as raised:
        in_process_node(model_dir, "synseg_empty", params_file=params)
    assert "vocabulary is empty" in str(raised.value)


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({"backend": "caffe"}, "backend must be one of torch, onnxruntime, tensorrt, got 'caffe'"),
        ({"vocabulary": ["door", "door"]}, "vocabulary repeats ['door']"),
        ({"threshold": 2.0}, "threshold"),
        ({"model_path": "/nonexistent/model"}, "cannot load the model from '/nonexistent/model'"),
    ],
)
def test_bad_start_up_parameters_stop_the_node_with_the_reason(model_dir, parameters, reason):
    with pytest.raises(StartupError) as raised:
        in_process_node(model_dir, "synseg_bad", **parameters)
    assert reason in str(raised.value)
