"""Latency of the synseg node end to end, and its overhead over the bare model, at 640x480 on the CPU.

    python benchmarks/node_latency.py --model tiny
    python benchmarks/node_latency.py --model vit-b-16 --frames 3 --flood-seconds 0

Needs the interfaces built (scripts/build_ros_interfaces.sh). Everything is measured in one run on
one machine, in this order so that nothing else competes for the CPU:
1. bare model: `Segmenter.segment` on a 640x480 RGB frame in this process, from a worker thread
   like the node's (median of --frames);
2. paced: the node in its own process gets one frame at a time, the next once the mask is back:
   input stamp -> mask received here, and from /diagnostics the node's receive -> publish time,
   per-stage medians and its overhead: receive -> publish minus the model call, frame by frame
   (a difference of two runs would mostly measure how busy the machine was in each);
3. flood: a camera publishing --flood-rate times faster than the model runs in the node, for
   --flood-seconds:
   masks per second, frames dropped, latency;
4. transport (--transport-frames): a 30 Hz 640x480 rgb8 camera in a process of its own, into the
   node's default best-effort subscription, with Fast DDS's defaults and with
   config/fastdds_large_images.xml: frames sent, received by the subscription, lost in DDS (the
   subscription's message-lost events), dropped by the node on purpose (latest wins);
5. vocabulary switch (--switch-words): the node's text encoder slowed to --slow-word-s per new word
   (synseg_ros.testing.SlowModel), a 10 Hz camera: masks per second before and while a
   --switch-words vocabulary is encoded, and the time from the parameter set to the first mask of
   the new vocabulary.
--model is a preset of `create_model` (random weights, written to a temporary checkpoint) or a
checkpoint folder. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synseg_ros.testing import (  # noqa: E402
    DEFAULT_PREFIX,
    REPO,
    NodeProcess,
    Probe,
    Slowness,
    use_interfaces,
    wait_until_ready,
)

HEIGHT, WIDTH = 480, 640
VOCABULARY = ["door", "chair", "table", "floor"]


def checkpoint(model: str, folder: Path) -> Path:
    from synseg_core import create_model, list_presets, save_model

    if model not in list_presets():
        return Path(model)
    save_model(create_model(model, seed=0), folder)
    return folder


def bare_model_seconds(path: Path, rgb: np.ndarray, frames: int) -> list[float]:
    """`Segmenter.segment` times, called from a thread other than the main one as the node does:
    on a busy CPU, torch ran several times slower from the main thread than from another one."""
    from synseg_core import Segmenter

    segmenter = Segmenter.from_checkpoint(path, backend="torch", device="cpu")
    times: list[float] = []

    def measure() -> None:
        segmenter.segment(rgb, VOCABULARY)  # warm-up: text embeddings, allocations
        for _ in range(frames):
            start = time.perf_counter()
            segmenter.segment(rgb, VOCABULARY)
            times.append(time.perf_counter() - start)

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    return times


def now_header(probe: Probe):
    from std_msgs.msg import Header

    return Header(stamp=probe.node.get_clock().now().to_msg(), frame_id="camera")


def seconds_since(probe: Probe, stamp) -> float:
    return (probe.node.get_clock().now().nanoseconds - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e9


def diagnostics_values(probe: Probe, inbox: list, after: float) -> dict[str, str]:
    """The node's next /diagnostics values published after `after` (time.time())."""

    def fresh():
        for array in reversed(inbox):
            if array.header.stamp.sec + array.header.stamp.nanosec / 1e9 > after and array.status:
                return {kv.key: kv.value for kv in array.status[0].values}
        return None

    probe.spin_until(lambda: fresh() is not None, 10, "diagnostics")
    return fresh()


def transport(model: Path, folder: Path, frames: int) -> list[tuple[str, dict[str, str], str]]:
    """Section 4: (profile, node diagnostics after the camera ran, camera output) per DDS profile."""
    import subprocess

    from diagnostic_msgs.msg import DiagnosticArray

    rows = []
    for name, profile in (("Fast DDS defaults", None), ("config/fastdds_large_images.xml", REPO / "config" / "fastdds_large_images.xml")):
        saved = os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
        if profile is not None:
            os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # the camera's and the node's processes
        probe = Probe("synseg_benchmark_transport")  # this process: defaults (profiles load once per process)
        node = NodeProcess(
            "synseg_transport", {"model_path": str(model), "diagnostics_period": "0.5"},
            {"image": "/benchmark/transport"}, folder / f"transport_{len(rows)}.log",
        )
        try:
            wait_until_ready(probe, node)
            diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
            camera = subprocess.run(
                [sys.executable, "-m", "synseg_ros.testing", "camera", "--topic", "/benchmark/transport",
                 "--rate", "30", "--frames", str(frames)],
                cwd=REPO, capture_output=True, text=True, timeout=60 + frames / 10, check=True,
            )
            probe.spin_for(1.0)
            rows.append((name, diagnostics_values(probe, diagnostics, time.time()), camera.stdout.strip()))
        finally:
            node.stop()
            probe.close()
            os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
            if saved is not None:
                os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = saved
    return rows


def vocabulary_switch(model: Path, folder: Path, words: int, word_s: float) -> dict[str, float]:
    """Section 5: masks per second before and during a vocabulary change, and the time to the
    first mask of the new vocabulary."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rclpy.parameter import get_parameter_value
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from synseg_ros.msg import Segmentation

    from synseg_ros.node import MESSAGES
    from synseg_ros.outputs import image_message

    probe = Probe("synseg_benchmark_switch")
    node = NodeProcess(
        "synseg_switch", {"model_path": str(model), "vocabulary": "[door, chair]", "image_reliability": "reliable"},
        {"image": "/benchmark/switch"}, folder / "switch.log", Slowness(word_s=word_s),
    )
    try:
        wait_until_ready(probe, node)
        masks = probe.collect(Segmentation, "/synseg_switch/segmentation")
        camera = probe.node.create_publisher(Image, "/benchmark/switch", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        probe.spin_until(lambda: camera.get_subscription_count() > 0, 60, "the node to subscribe")
        rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        received: list[tuple[float, int]] = []  # (when, vocabulary_version)

        def stream(seconds: float, until=lambda: False) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end and not until():
                camera.publish(image_message(MESSAGES, now_header(probe), rgb, "rgb8"))
                next_frame = time.monotonic() + 0.1
                while time.monotonic() < next_frame:
                    probe.executor.spin_once(timeout_sec=0.01)
                    while masks:
                        received.append((time.monotonic(), masks.pop(0).vocabulary_version))

        stream(3.0)  # warm up
        received.clear()
        stream(5.0)
        before_hz = len(received) / 5.0
        old_version = received[-1][1]
        client = AsyncParameterClient(probe.node, "/synseg_switch")
        probe.spin_until(lambda: client.services_are_ready(), 30, "the parameter services")
        text = "[" + ", ".join(f"switch{i}" for i in range(words)) + "]"
        set_at = time.monotonic()
        future = client.set_parameters([ParameterMsg(name="vocabulary", value=get_parameter_value(text))])
        received.clear()
        stream(words * word_s + 60, until=lambda: any(v != old_version for _, v in received))
        assert future.done() and future.result().results[0].successful
        first_new = next(t for t, v in received if v != old_version)
        during = [t for t, v in received if v == old_version]
        return {
            "before_hz": before_hz,
            "during_hz": len(during) / (first_new - set_at),
            "to_first_new_mask_s": first_new - set_at,
            "encoding_s": words * word_s,
        }
    finally:
        node.stop()
        probe.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="create_model preset or checkpoint folder")
    parser.add_argument("--frames", type=int, default=20, help="frames for the bare and paced measurements")
    parser.add_argument("--flood-seconds", type=float, default=8.0)
    parser.add_argument("--flood-rate", type=float, default=3.0, help="camera rate as a multiple of the model's")
    parser.add_argument(
        "--outputs", choices=("labels", "all"), default="labels",
        help="what to subscribe to: the node builds only what someone subscribes to",
    )
    parser.add_argument("--transport-frames", type=int, default=300, help="frames of the 30 Hz camera; 0 = skip")
    parser.add_argument("--switch-words", type=int, default=20, help="words of the new vocabulary; 0 = skip")
    parser.add_argument("--slow-word-s", type=float, default=1.0, help="text encoding time per new word")
    parser.add_argument("--only", choices=("all", "transport", "switch"), default="all", help="run only one section")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    use_interfaces(Path(os.environ.get("SYNSEG_ROS_PREFIX", DEFAULT_PREFIX)), domain_id=150 + os.getpid() % 50)

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from synseg_ros.node import MESSAGES
    from synseg_ros.outputs import image_message

    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as temporary:
        model = checkpoint(args.model, Path(temporary) / "model")
        if args.only != "all":
            report_extra(args, model, Path(temporary))
            return 0
        bare = statistics.median(bare_model_seconds(model, rgb, args.frames))

        probe = Probe("synseg_benchmark")
        # Reliable: this measures the node, not DDS dropping fragments of large best-effort frames.
        node = NodeProcess(
            "synseg",
            {
                "model_path": str(model),
                "vocabulary": "[" + ", ".join(VOCABULARY) + "]",
                "image_reliability": "reliable",
                "diagnostics_period": "0.5",
            },
            {"image": "/benchmark/image"},
            Path(temporary) / "node.log",
        )
        try:
            wait_until_ready(probe, node)
            labels = probe.collect(Image, "/synseg/labels")
            if args.outputs == "all":
                from synseg_ros.msg import Segmentation

                for topic in ("confidence", "overlay"):
                    probe.collect(Image, f"/synseg/{topic}")
                probe.collect(Segmentation, "/synseg/segmentation")
            diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
            camera = probe.node.create_publisher(Image, "/benchmark/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            probe.spin_until(lambda: camera.get_subscription_count() > 0, 60, "the node to subscribe")

            paced = []
            for index in range(args.frames + 1):
                msg = image_message(MESSAGES, now_header(probe), rgb, "rgb8")
                labels.clear()
                camera.publish(msg)
                probe.spin_until(lambda m=msg: any(x.header.stamp == m.header.stamp for x in labels), 120, "a mask")
                if index:  # the first frame warms the node up
                    paced.append(seconds_since(probe, msg.header.stamp))
            node_values = diagnostics_values(probe, diagnostics, time.time())
            rss_paced = node.rss_kib()
            receive_to_publish = float(node_values["latency_receive_to_publish_ms"]) / 1000
            overhead = float(node_values["latency_node_overhead_ms"]) / 1000
            model_s = receive_to_publish - overhead

            flood = None
            if args.flood_seconds > 0:
                before = diagnostics_values(probe, diagnostics, time.time())
                rate = args.flood_rate / model_s
                latencies, sent, start = [], 0, time.monotonic()
                labels.clear()
                while time.monotonic() - start < args.flood_seconds:
                    camera.publish(image_message(MESSAGES, now_header(probe), rgb, "rgb8"))
                    sent += 1
                    next_frame = start + sent / rate
                    while time.monotonic() < next_frame:
                        probe.executor.spin_once(timeout_sec=max(0.0, min(0.005, next_frame - time.monotonic())))
                        while labels:
                            latencies.append(seconds_since(probe, labels.pop().header.stamp))
                elapsed = time.monotonic() - start
                after = diagnostics_values(probe, diagnostics, time.time())
                dropped = int(after["frames_dropped"]) - int(before["frames_dropped"])
                flood = (rate, sent / elapsed, len(latencies) / elapsed, dropped, sent, latencies, node.rss_kib())
        finally:
            node.stop()
            probe.close()
        print_latency(args, bare, receive_to_publish, overhead, model_s, paced, node_values, rss_paced, flood)
        report_extra(args, model, Path(temporary))
    return 0


def print_latency(args, bare, receive_to_publish, overhead, model, paced, node_values, rss_paced, flood) -> None:
    stages = ", ".join(f"{s} {float(node_values[f'latency_{s}_ms']):.1f}" for s in ("convert", "text", "preprocess", "infer", "postprocess", "publish"))
    print(
        f"### synseg node, {args.model}, {WIDTH}x{HEIGHT} rgb8, CPU ({os.cpu_count()} cores), "
        f"{len(VOCABULARY)} words, subscribed: {args.outputs}\n"
    )
    print("| measure | value |\n|---|---|")
    print(f"| bare model `Segmenter.segment`, this process (median of {args.frames}) | {bare * 1000:.1f} ms |")
    print(f"| node receive -> publish (median, /diagnostics) | {receive_to_publish * 1000:.1f} ms |")
    print(f"| of which the model call, same frames | {model * 1000:.1f} ms |")
    print(f"| node overhead (receive -> publish outside the model call) | {overhead * 1000:.1f} ms ({100 * overhead / model:.1f} % of model time) |")
    print(f"| end to end: input stamp -> mask received, paced (median of {len(paced)}) | {statistics.median(paced) * 1000:.1f} ms |")
    print(f"| node stages (median ms) | {stages} |")
    print(f"| node memory after paced run | {rss_paced / 1024:.0f} MiB |")
    if flood is not None:
        rate, camera_hz, mask_hz, dropped, sent, latencies, rss = flood
        print(f"| flood: camera rate | {camera_hz:.1f} Hz ({rate:.1f} Hz asked) |")
        masks = round(mask_hz * args.flood_seconds)
        print(f"| flood: masks published | {mask_hz:.1f} Hz |")
        print(f"| flood: frames dropped by the node (latest wins) | {dropped} of {sent} |")
        print(f"| flood: frames replaced in DDS depth-1 queues before delivery | {max(0, sent - masks - dropped)} of {sent} |")
        print(f"| flood: input stamp -> mask received (median / max) | {statistics.median(latencies) * 1000:.1f} / {max(latencies) * 1000:.1f} ms |")
        print(f"| flood: node memory after | {rss / 1024:.0f} MiB |")


def report_extra(args, model: Path, folder: Path) -> None:
    """Sections 4 and 5, as tables."""
    if args.transport_frames and args.only in ("all", "transport"):
        print(f"\n### transport: 30 Hz camera, {WIDTH}x{HEIGHT} rgb8, own process, best-effort subscription\n")
        print("| DDS profile (camera and node) | sent | received by the subscription | lost in DDS | dropped by the node (latest wins) | segmented |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, values, camera in transport(model, folder, args.transport_frames):
            sent = int(camera.split()[2])
            received = int(values["frames_received"])
            print(
                f"| {name} | {sent} | {received} ({100 * received / sent:.1f} %) | {values['frames_lost']} | "
                f"{values['frames_dropped']} | {values['frames_processed']} |"
            )
    if args.switch_words and args.only in ("all", "switch"):
        result = vocabulary_switch(model, folder, args.switch_words, args.slow_word_s)
        print(f"\n### vocabulary switch: [door, chair] -> {args.switch_words} new words, text encoder {args.slow_word_s} s per new word\n")
        print("| measure | value |\n|---|---|")
        print(f"| masks per second before the change (10 Hz camera) | {result['before_hz']:.1f} |")
        print(f"| masks per second while the new vocabulary is encoded | {result['during_hz']:.1f} |")
        print(f"| parameter set -> first mask of the new vocabulary | {result['to_first_new_mask_s']:.1f} s (encoding alone: {result['encoding_s']:.1f} s) |")


if __name__ == "__main__":
    sys.exit(main())
