"""Real ROS 2 for the synseg_ros tests: the built interfaces, a private DDS domain, the node process.

The interfaces come from scripts/build_ros_interfaces.sh (prefix `.ros_interfaces/`, or
$SYNSEG_ROS_PREFIX). The node runs in its own process, as on a robot, and the tests talk to it over
real DDS from a probe node in this process.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: see docs/ROS.md")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from synseg_ros.testing import (  # noqa: E402
    DEFAULT_PREFIX,
    NodeProcess,
    Probe,
    Slowness,
    latched_qos,
    use_interfaces,
    wait_until_ready,
)

os.environ["HF_HUB_OFFLINE"] = "1"
try:
    # A domain per test session, so parallel runs on one machine do not hear each other.
    use_interfaces(Path(os.environ.get("SYNSEG_ROS_PREFIX", DEFAULT_PREFIX)), domain_id=100 + os.getpid() % 100)
except FileNotFoundError as missing:
    pytest.exit(str(missing), 2)

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.parameter import get_parameter_value, parameter_value_to_python  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

if TYPE_CHECKING:
    from synseg_ros.node import SynsegNode

LATCHED = latched_qos()
STARTUP_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init SynSeg checkpoint (fast on the CPU)."""
    from synseg_core import create_model, save_model

    directory = tmp_path_factory.mktemp("tiny_model")
    save_model(create_model("tiny", seed=0), directory)
    return directory


@pytest.fixture(scope="session")
def probe() -> Iterator[Probe]:
    probe = Probe()
    yield probe
    probe.close()


def start_node(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    name: str,
    slowness: Slowness | None = None,
    **parameters: str,
) -> NodeProcess:
    params = {
        "model_path": str(model_dir),
        "backend": "torch",
        "device": "cpu",
        "vocabulary": "[door, chair]",
        "diagnostics_period": "0.5",
        **parameters,
    }
    log = tmp_path_factory.mktemp(name) / "node.log"
    remaps = {topic: f"/{name}/camera/{topic}" for topic in ("image", "image/compressed", "camera_info")}
    return NodeProcess(name, params, remaps, log, slowness)


def cli_value(value: object) -> str:
    """How `-p name:=value` spells a value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return str(value)


def in_process_node(
    model_dir: Path, name: str, params_file: Path | None = None, **parameters: object
) -> tuple[SynsegNode, Callable[[], None]]:
    """A SynsegNode spinning in a thread of this process (still talking over real DDS, and open to
    test doubles); returns it and its stop function."""
    from rclpy.executors import SingleThreadedExecutor

    from synseg_ros.node import SynsegNode

    context = rclpy.Context()
    rclpy.init(context=context)
    arguments = ["--ros-args", "-r", f"__node:={name}"]
    for topic in ("image", "image/compressed", "camera_info"):
        arguments += ["-r", f"{topic}:=/{name}/camera/{topic}"]
    if params_file is not None:
        arguments += ["--params-file", str(params_file)]
    for key, value in {"model_path": str(model_dir), "diagnostics_period": 0.5, **parameters}.items():
        arguments += ["-p", f"{key}:={cli_value(value)}"]
    try:
        node = SynsegNode(context=context, cli_args=arguments)
    except Exception:
        rclpy.shutdown(context=context)
        raise
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()

    def stop() -> None:
        executor.shutdown()
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
        thread.join(5)

    return node, stop


@pytest.fixture(scope="session")
def synseg(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, probe: Probe) -> Iterator[NodeProcess]:
    """The node under test, in its own process, ready (model loaded)."""
    node = start_node(tmp_path_factory, model_dir, "synseg")
    try:
        wait_until_ready(probe, node, STARTUP_TIMEOUT_S)
        yield node
    finally:
        node.stop()


def fresh_environment() -> dict[str, str]:
    """The environment of a new shell: nothing of the source tree or of the built interfaces (and
    the ROS wheels' bootstrapper sets LD_LIBRARY_PATH again, as in any new interpreter)."""
    hidden = ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")
    return {key: value for key, value in os.environ.items() if key not in hidden}


def make_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


_stamps = itertools.count(1000)


def next_header(frame_id: str = "camera_optical_frame") -> Header:
    """A header with a stamp no other test message has, to pair outputs with inputs."""
    return Header(stamp=Time(sec=next(_stamps), nanosec=123456789), frame_id=frame_id)


def stamp_of(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def image_msg(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    from synseg_ros.node import MESSAGES
    from synseg_ros.outputs import image_message

    return image_message(MESSAGES, header or next_header(), array, encoding)


class SynsegClient:
    """What a consumer of one synseg node sees and does, over DDS: its outputs, its parameters
    (set exactly as `ros2 param set` does), its service, and an image publisher."""

    def __init__(self, probe: Probe, name: str, image_topic: str, image_type: Any = Image, image_qos: Any = 10) -> None:
        from synseg_ros.msg import LabelInfo, Segmentation
        from synseg_ros.srv import Segment

        self.probe, self.name = probe, name
        self.labels = probe.collect(Image, f"/{name}/labels")
        self.confidence = probe.collect(Image, f"/{name}/confidence")
        self.overlay = probe.collect(Image, f"/{name}/overlay")
        self.segmentation = probe.collect(Segmentation, f"/{name}/segmentation")
        self.label_info = probe.collect(LabelInfo, f"/{name}/label_info", LATCHED)
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")
        self.images = probe.node.create_publisher(image_type, image_topic, image_qos)
        self.parameters = AsyncParameterClient(probe.node, f"/{name}")
        self.segment_service = probe.node.create_client(Segment, f"/{name}/segment")
        probe.spin_until(lambda: self.images.get_subscription_count() > 0, STARTUP_TIMEOUT_S, f"{name} to subscribe")

    def send(
        self, msg: Any, timeout: float = 30.0, outputs: tuple[str, ...] = ("labels", "confidence", "segmentation")
    ) -> SimpleNamespace:
        """Publish `msg` (again every second: best-effort DDS may lose large images) until the
        node's `outputs` (inboxes of this client) for its stamp have arrived; return them."""
        stamp = stamp_of(msg)

        def find(inbox: list[Any]) -> Any:
            return next((m for m in reversed(inbox) if stamp_of(m) == stamp), None)

        deadline = time.monotonic() + timeout
        while True:
            self.images.publish(msg)
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                found = SimpleNamespace(**{name: find(getattr(self, name)) for name in outputs})
                if None not in vars(found).values():
                    return found
                self.probe.executor.spin_once(timeout_sec=0.05)
            if time.monotonic() > deadline:
                raise AssertionError(f"no output for the image stamped {stamp} within {timeout:.0f} s")

    def set(self, name: str, text: str) -> SetParametersResult:
        """`ros2 param set /<node> <name> <text>`: the text is YAML-parsed into a typed value."""
        parameter = ParameterMsg(name=name, value=get_parameter_value(text))
        return self._call(self.parameters.set_parameters([parameter])).results[0]

    def get(self, name: str) -> Any:
        value = self._call(self.parameters.get_parameters([name])).values[0]
        return parameter_value_to_python(value)

    def call_segment(self, request: Any) -> Any:
        self.probe.spin_until(lambda: self.segment_service.service_is_ready(), 20, "the segment service")
        return self._call(self.segment_service.call_async(request), timeout=60)

    def status(self, newer_than: float = 0.0) -> DiagnosticStatus:
        """This node's next /diagnostics status, published after `newer_than` (time.time())."""
        full_name = f"/{self.name}: segmentation"

        def latest() -> DiagnosticStatus | None:
            for array in reversed(self.diagnostics):
                if array.header.stamp.sec + array.header.stamp.nanosec / 1e9 <= newer_than:
                    return None
                for status in array.status:
                    if status.name == full_name:
                        return status
            return None

        self.probe.spin_until(lambda: latest() is not None, 10, f"diagnostics of {self.name}")
        return latest()

    def _call(self, future: Any, timeout: float = 20) -> Any:
        self.probe.spin_until(future.done, timeout, "a service response")
        return future.result()


def values_of(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="session")
def client(probe: Probe, synseg: NodeProcess) -> SynsegClient:
    return SynsegClient(probe, synseg.name, f"/{synseg.name}/camera/image")
