"""Ctrl-C ends the node at once, even while a model call that takes long is in flight."""

from __future__ import annotations

import signal
import time

from conftest import STARTUP_TIMEOUT_S, SynsegClient, image_msg, make_rgb, start_node

from synseg_ros.testing import Slowness, wait_until_ready

FRAME_S = 60.0  # far longer than any wait below
EXIT_WITHIN_S = 3.0  # before the fix: a 5 s join of the inference thread, then 1-2 s of teardown


def test_sigint_ends_the_node_without_waiting_for_the_model_call_in_flight(tmp_path_factory, model_dir, probe):
    node = start_node(tmp_path_factory, model_dir, "synseg_sigint", Slowness(frame_s=FRAME_S))
    try:
        wait_until_ready(probe, node, STARTUP_TIMEOUT_S)
        client = SynsegClient(probe, node.name, f"/{node.name}/camera/image")
        deadline = time.monotonic() + 30
        while "slow model: segmenting a frame" not in node.log:
            assert time.monotonic() < deadline, "the node never started segmenting"
            client.images.publish(image_msg(make_rgb(24, 32), "rgb8"))
            probe.spin_for(0.3)
        start = time.monotonic()
        node.process.send_signal(signal.SIGINT)
        node.process.wait(timeout=FRAME_S / 2)
        took = time.monotonic() - start
    finally:
        node.stop()
    assert node.process.returncode == 0
    assert took < EXIT_WITHIN_S, f"the node took {took:.1f} s to exit"
    assert "[ERROR]" not in node.log
