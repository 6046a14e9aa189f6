"""The ROS node with ``backend: onnxruntime``, in its own process over real DDS, in the venv without torch."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import read_rgb

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: pip install .[ros]")

from synseg_ros.testing import DEFAULT_PREFIX, NodeProcess, Probe, use_interfaces, wait_until_ready  # noqa: E402

NAME = "synseg_deploy"
_stamps = itertools.count(1)


@pytest.fixture(scope="module")
def probe(fixtures):
    use_interfaces(Path(os.environ.get("SYNSEG_ROS_PREFIX", DEFAULT_PREFIX)), domain_id=100 + os.getpid() % 100)
    probe = Probe("synseg_deploy_probe")
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def node(fixtures, probe, tmp_path_factory):
    parameters = {
        "model_path": str(fixtures.checkpoint), "backend": "onnxruntime", "engine_path": str(fixtures.export),
        "vocabulary": "[" + ", ".join(fixtures.vocabulary) + "]", "threshold": str(fixtures.threshold),
        "prompt_templates": fixtures.template_set, "publish_overlay": "false",
    }
    process = NodeProcess(NAME, parameters, {"image": f"/{NAME}/camera/image"}, tmp_path_factory.mktemp("node") / "node.log")
    try:
        wait_until_ready(probe, process)
        yield process
    finally:
        process.stop()


def segment_over_dds(probe: Probe, publisher, inbox: list, rgb: np.ndarray, timeout: float = 60.0):
    """Publish an rgb8 frame (again every second: best effort may drop it) until its Segmentation comes back."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from synseg_ros.node import MESSAGES
    from synseg_ros.outputs import image_message

    stamp = Time(sec=next(_stamps), nanosec=0)
    message = image_message(MESSAGES, Header(stamp=stamp, frame_id="camera"), rgb, "rgb8")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publisher.publish(message)
        resend = time.monotonic() + 1.0
        while time.monotonic() < resend:
            for answer in inbox:
                if answer.header.stamp == stamp:
                    return answer
            probe.executor.spin_once(timeout_sec=0.05)
    raise AssertionError(f"no segmentation for the frame stamped {stamp.sec} within {timeout:.0f} s")


def test_node_on_onnxruntime_publishes_the_torch_backends_labels(fixtures, probe, node):
    from sensor_msgs.msg import Image
    from synseg_ros.msg import Segmentation

    inbox = probe.collect(Segmentation, f"/{NAME}/segmentation")
    publisher = probe.node.create_publisher(Image, f"/{NAME}/camera/image", 10)
    probe.spin_until(lambda: publisher.get_subscription_count() > 0, 60, "the node to subscribe")
    for path in fixtures.samples:
        answer = segment_over_dds(probe, publisher, inbox, read_rgb(path))
        ids = {c.name: c.id for c in answer.classes}
        expected = fixtures.expected[path.name]
        to_id = np.array([ids[w] for w in fixtures.vocabulary] + [answer.unlabeled])
        labels = np.frombuffer(bytes(answer.labels.data), np.uint8).reshape(answer.labels.height, answer.labels.width)
        np.testing.assert_array_equal(labels, to_id[np.where(expected < 0, len(fixtures.vocabulary), expected)], err_msg=path.name)
    assert "onnxruntime" in node.log
