"""config/fastdds_large_images.xml: with it, a 30 Hz 640x480 rgb8 camera in another process loses no
frame on the way to the node's best-effort subscription; with Fast DDS's defaults most are lost, and
the node says so."""

from __future__ import annotations

import subprocess
import sys

from conftest import STARTUP_TIMEOUT_S, SynsegClient, start_node, values_of

from synseg_ros.testing import REPO, NodeProcess, wait_until_ready

FRAMES = 150
PROFILE = REPO / "config" / "fastdds_large_images.xml"


def run_camera(tmp_path_factory, model_dir, probe, name: str) -> tuple[dict[str, str], NodeProcess]:
    """The node, and a 30 Hz camera in a process of its own; the node's diagnostics afterwards."""
    node = start_node(tmp_path_factory, model_dir, name, image_reliability="best_effort")
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
        return values_of(client.status()), node
    finally:
        node.stop()


def test_with_the_shipped_profile_frames_of_a_30_hz_camera_reach_the_node(tmp_path_factory, model_dir, probe, monkeypatch):
    # For the processes started here: the camera (whose shared-memory segment carries the frames)
    # and the node. This process's participant exists already and keeps the defaults.
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE))
    values, _ = run_camera(tmp_path_factory, model_dir, probe, "synseg_dds")
    received, lost = int(values["frames_received"]), int(values["frames_lost"])
    assert received >= 0.99 * FRAMES, f"{received} of {FRAMES} frames reached the node ({lost} lost in DDS)"
    assert lost == 0


def test_without_it_the_node_counts_and_logs_the_frames_lost_in_dds(tmp_path_factory, model_dir, probe, monkeypatch):
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    values, node = run_camera(tmp_path_factory, model_dir, probe, "synseg_dds_defaults")
    received, lost = int(values["frames_received"]), int(values["frames_lost"])
    assert received < FRAMES, f"all {FRAMES} frames arrived with Fast DDS's defaults: the profile's premise is gone"
    assert lost >= (FRAMES - received) * 0.9, f"{received} received, {lost} counted as lost"
    assert "frames lost in DDS so far" in node.log and "config/fastdds_large_images.xml" in node.log
