"""`ros2 launch synseg_ros segment.launch.py` starts a working node (needs launch_ros, i.e. a ROS 2
install: it is not on PyPI)."""

from __future__ import annotations

import threading

import pytest
from conftest import SynsegClient, image_msg, make_rgb

from synseg_ros.testing import REPO

pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI; it comes with a ROS 2 install)")

from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from launch import LaunchDescription, LaunchService  # noqa: E402


def test_launch_file_starts_the_node_with_its_arguments(model_dir, probe):
    arguments = {
        "image": "/launch_test/camera/image_raw",
        "namespace": "launch_test",
        "params_file": str(REPO / "config" / "synseg.yaml"),
        "model_path": str(model_dir),
        "backend": "torch",
        "vocabulary": "[door, chair]",
        "log_level": "warn",
    }
    description = LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(REPO / "launch" / "segment.launch.py")),
            launch_arguments=arguments.items(),
        )
    ])
    service = LaunchService()
    service.include_launch_description(description)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        client = SynsegClient(probe, "launch_test/synseg", arguments["image"])
        probe.spin_until(lambda: bool(client.label_info), 90, "the launched node's label_info")
        assert [c.name for c in client.label_info[-1].classes] == ["door", "chair"]
        out = client.send(image_msg(make_rgb(24, 32), "rgb8"))
        assert (out.labels.width, out.labels.height) == (32, 24)
    finally:
        service.shutdown()
        thread.join(30)
