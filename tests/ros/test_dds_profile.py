"""config/fastdds_large_images.xml: with it, a 30 Hz 640x480 rgb8 camera in another process loses no
frame on the way to the node's best-effort subscription (Fast DDS's defaults lose most of them)."""

from __future__ import annotations

import subprocess
import sys

from conftest import STARTUP_TIMEOUT_S, SynsegClient, start_node, values_of

from synseg_ros.testing import REPO, wait_until_ready

FRAMES = 150


def test_with_the_shipped_profile_frames_of_a_30_hz_camera_reach_the_node(tmp_path_factory, model_dir, probe, monkeypatch):
    profile = REPO / "config" / "fastdds_large_images.xml"
    # For the processes started below: the camera (whose shared-memory segment carries the frames)
    # and the node. This process's participant exists already and keeps the defaults.
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    node = start_node(tmp_path_factory, model_dir, "synseg_dds", image_reliability="best_effort")
    try:
        wait_until_ready(probe, node, STARTUP_TIMEOUT_S)
        client = SynsegClient(probe, node.name, f"/{node.name}/camera/image")
        camera = subprocess.run(
            [sys.executable, "-m", "synseg_ros.testing", "camera", "--topic", f"/{node.name}/camera/image",
             "--rate", "30", "--frames", str(FRAMES)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert camera.returncode == 0, camera.stderr
        assert f"sent {FRAMES} frames" in camera.stdout
        client.probe.spin_for(1.0)
        values = values_of(client.status())
    finally:
        node.stop()
    received, lost = int(values["frames_received"]), int(values["frames_lost"])
    assert received >= 0.99 * FRAMES, f"{received} of {FRAMES} frames reached the node ({lost} lost in DDS)"
    assert lost == 0
