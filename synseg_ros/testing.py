"""Run a synseg node in its own process and talk to it over DDS: shared by the tests and benchmarks.

With ROS 2 from PyPI the interfaces live in the prefix that scripts/build_ros_interfaces.sh built;
`use_interfaces` makes them importable in this process and in the processes it starts.
Import rclpy-dependent modules (synseg_ros.node, synseg_ros.msg) only after calling it.

Two test programs, for tests and benchmarks (the product's entry point is `python -m synseg_ros.node`):
- `python -m synseg_ros.testing node --slow-word-s S --slow-frame-s F --ros-args ...`: the node with
  a model slowed on purpose (`SlowModel`), to see what the node does meanwhile;
- `python -m synseg_ros.testing camera --topic T --rate HZ --frames N`: a camera in a process of its
  own (DDS settings such as the shared-memory segment are per process), publishing 640x480 rgb8.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pkgutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = REPO / ".ros_interfaces"


def interfaces_site(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def use_interfaces(prefix: Path, domain_id: int) -> None:
    """Put the built interfaces on this process's paths and environment, on a private DDS domain.

    Children inherit the environment. This process started without the prefix in LD_LIBRARY_PATH,
    where rclpy looks its type support libraries up by name, so they are loaded by path here first.
    """
    site = interfaces_site(prefix)
    if not (site / "synseg_ros" / "msg").is_dir():
        raise FileNotFoundError(f"synseg_ros interfaces are not built in {prefix}: run scripts/build_ros_interfaces.sh")

    def prepend(variable: str, *entries: str) -> None:
        os.environ[variable] = os.pathsep.join(p for p in (*entries, os.environ.get(variable)) if p)

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # no traffic beyond this host
    prepend("LD_LIBRARY_PATH", str(prefix / "lib"))
    prepend("PYTHONPATH", str(REPO), str(site))
    prepend("AMENT_PREFIX_PATH", str(prefix), sys.prefix)
    for entry in (str(site), str(REPO)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # synseg_ros is imported already (this module is in it): extend its __path__ as its __init__ does.
    package = sys.modules["synseg_ros"]
    package.__path__ = pkgutil.extend_path(package.__path__, "synseg_ros")
    for library in sorted((prefix / "lib").glob("libsynseg_ros__*" + sysconfig.get_config_var("SHLIB_SUFFIX"))):
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


@dataclass(frozen=True)
class Slowness:
    """How much slower than its model the node under test runs (see SlowModel)."""

    word_s: float = 0.0  # per word its text encoder has not encoded before
    frame_s: float = 0.0  # per segmented image
    failing_word: str = ""  # encoding a vocabulary with this word raises

    def arguments(self) -> list[str]:
        return ["--slow-word-s", str(self.word_s), "--slow-frame-s", str(self.frame_s), "--failing-word", self.failing_word]


class SlowModel:
    """The node's Segmenter with a text encoder that takes `word_s` for each word not encoded
    before (as a cache miss of a big text tower does) and segmenting that takes `frame_s` longer.
    Prints what it does (to the node's log), so tests can tell what was encoded and when."""

    def __init__(self, segmenter: Any, slowness: Slowness) -> None:
        self._segmenter = segmenter
        self._slowness = slowness
        self._encoded: set[tuple[str | None, str]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._segmenter, name)

    def encode_vocabulary(self, words: Sequence[str], template_set: str | None = None) -> Any:
        new = [w for w in words if (template_set, w) not in self._encoded]
        if self._slowness.failing_word in new:
            raise RuntimeError(f"the text encoder failed on '{self._slowness.failing_word}'")
        if new:
            print(f"slow model: encoding {len(new)} new words", flush=True)
            time.sleep(self._slowness.word_s * len(new))
            self._encoded.update((template_set, w) for w in new)
        return self._segmenter.encode_vocabulary(words, template_set)

    def segment(self, image: Any, vocabulary: Sequence[str], threshold: Any = None, template_set: Any = None) -> Any:
        self.encode_vocabulary(vocabulary, template_set)  # what segment encodes, it encodes as slowly
        if self._slowness.frame_s:
            print("slow model: segmenting a frame", flush=True)
            time.sleep(self._slowness.frame_s)
        return self._segmenter.segment(image, vocabulary, threshold, template_set)


class NodeProcess:
    """`python -m synseg_ros.node` in its own process; `stop` never leaves it running. With
    `slowness`, the node runs a SlowModel."""

    def __init__(
        self,
        name: str,
        parameters: dict[str, str],
        remaps: dict[str, str],
        log: Path,
        slowness: Slowness | None = None,
    ) -> None:
        entry = ["synseg_ros.node"] if slowness is None else ["synseg_ros.testing", "node", *slowness.arguments()]
        args = [sys.executable, "-m", *entry, "--ros-args", "-r", f"__node:={name}"]
        for key, value in parameters.items():
            args += ["-p", f"{key}:={value}"]
        for source, target in remaps.items():
            args += ["-r", f"{source}:={target}"]
        self.name = name
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the node (the ROS wheels' bootstrapper execs in place: same pid)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.process.pid}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


class Probe:
    """The other side of the wire: a node in this process, spun by whoever waits."""

    def __init__(self, name: str = "synseg_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def collect(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
        """Subscribe; received messages are appended to the returned list."""
        received: list[Any] = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)


def latched_qos() -> Any:
    """Reliable + transient-local: what label_info is published with."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_until_ready(probe: Probe, node: NodeProcess, timeout: float = 120.0) -> list[Any]:
    """Wait for the node's latched label_info, published once its model is loaded; return the inbox."""
    from synseg_ros.msg import LabelInfo

    label_info = probe.collect(LabelInfo, f"/{node.name}/label_info", latched_qos())

    def ready() -> bool:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{node.log}")
        return bool(label_info)

    probe.spin_until(ready, timeout, f"{node.name} to start")
    return label_info


def slow_node_main(argv: list[str]) -> None:
    """The node, its model wrapped in a SlowModel (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="synseg_ros.testing node", description=slow_node_main.__doc__)
    parser.add_argument("--slow-word-s", type=float, default=0.0)
    parser.add_argument("--slow-frame-s", type=float, default=0.0)
    parser.add_argument("--failing-word", default="")
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    options = parser.parse_args(argv[:cut])
    slowness = Slowness(options.slow_word_s, options.slow_frame_s, options.failing_word)

    from synseg_ros import node

    load = node.load_segmenter
    node.load_segmenter = lambda settings: SlowModel(load(settings), slowness)  # type: ignore[assignment, return-value]
    node.main([sys.argv[0], *argv[cut:]])


def camera_main(argv: list[str]) -> None:
    """Publish --frames 640x480 rgb8 images at --rate Hz (reliable, depth 10, as camera drivers
    do) once a subscriber matched; print how many were sent."""
    parser = argparse.ArgumentParser(prog="synseg_ros.testing camera", description=camera_main.__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300)
    options = parser.parse_args(argv)
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from synseg_ros.node import MESSAGES
    from synseg_ros.outputs import image_message

    rclpy.init()
    node = rclpy.create_node("synseg_test_camera")
    publisher = node.create_publisher(Image, options.topic, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    while publisher.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    rclpy.spin_once(node, timeout_sec=1.0)  # let discovery settle
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    start = time.monotonic()
    for index in range(options.frames):
        header = node.get_clock().now().to_msg()
        publisher.publish(image_message(MESSAGES, _header(header), rgb, "rgb8"))
        delay = start + (index + 1) / options.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(f"camera: sent {options.frames} frames in {time.monotonic() - start:.2f} s", flush=True)
    time.sleep(1.0)  # the last frames are on their way
    node.destroy_node()
    rclpy.shutdown()


def _header(stamp: Any) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=stamp, frame_id="camera")


if __name__ == "__main__":
    programs = {"node": slow_node_main, "camera": camera_main}
    if len(sys.argv) < 2 or sys.argv[1] not in programs:
        sys.exit(f"usage: python -m synseg_ros.testing {{{','.join(programs)}}} ...")
    programs[sys.argv[1]](sys.argv[2:])
