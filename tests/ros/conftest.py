"""Real ROS 2 for the synseg_ros tests: the built interfaces, a private DDS domain, the node process.

The interfaces come from scripts/build_ros_interfaces.sh (prefix `.ros_interfaces/`, or
$SYNSEG_ROS_PREFIX). The node runs in its own process, as on a robot, and the tests talk to it over
real DDS from a probe node in this process.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PREFIX = Path(os.environ.get("SYNSEG_ROS_PREFIX", REPO / ".ros_interfaces"))
SITE = PREFIX / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: see docs/ROS.md")
if not (SITE / "synseg_ros" / "msg").is_dir():
    pytest.exit(f"synseg_ros interfaces are not built in {PREFIX}: run scripts/build_ros_interfaces.sh", 2)

# A private domain per test session (parallel runs on one machine must not hear each other) and no
# traffic beyond this host.
os.environ["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
    p for p in (str(PREFIX / "lib"), os.environ.get("LD_LIBRARY_PATH")) if p
)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), str(SITE), os.environ.get("PYTHONPATH")) if p
)
os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(
    p for p in (str(PREFIX), sys.prefix, os.environ.get("AMENT_PREFIX_PATH")) if p
)
for entry in (str(SITE), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)
# rclpy finds type support libraries by name through the LD_LIBRARY_PATH this process started with;
# loading them by path first makes those lookups succeed here (the node process gets the variable).
for library in sorted((PREFIX / "lib").glob("libsynseg_ros__*" + sysconfig.get_config_var("SHLIB_SUFFIX"))):
    ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import get_parameter_value, parameter_value_to_python  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

STARTUP_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init SynSeg checkpoint (fast on the CPU)."""
    from synseg_core import create_model, save_model

    directory = tmp_path_factory.mktemp("tiny_model")
    save_model(create_model("tiny", seed=0), directory)
    return directory


class NodeProcess:
    """`python -m synseg_ros.node` in its own process, stopped (never orphaned) at teardown."""

    def __init__(self, name: str, parameters: dict[str, str], remaps: dict[str, str], log: Path) -> None:
        args = [sys.executable, "-m", "synseg_ros.node", "--ros-args", "-r", f"__node:={name}"]
        for key, value in parameters.items():
            args += ["-p", f"{key}:={value}"]
        for source, target in remaps.items():
            args += ["-r", f"{source}:={target}"]
        self.name = name
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident memory of the node's process (the bootstrapper execs in place: same pid)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


class Probe:
    """The test's side of the wire: a node in this process with helpers to publish and wait."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("synseg_test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)

    def collect(self, msg_type: Any, topic: str, qos: QoSProfile | int = 10) -> list[Any]:
        """Subscribe and return the list that received messages are appended to."""
        received: list[Any] = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)


LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="session")
def probe() -> Iterator[Probe]:
    probe = Probe()
    yield probe
    probe.close()


def start_node(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, name: str, **parameters: str
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
    return NodeProcess(name, params, remaps, log)


def wait_until_ready(probe: Probe, node: NodeProcess) -> list[Any]:
    """Wait for the node's latched label_info (published once the model is loaded); return the list."""
    from synseg_ros.msg import LabelInfo

    label_info = probe.collect(LabelInfo, f"/{node.name}/label_info", LATCHED)

    def ready() -> bool:
        if node.process.poll() is not None:
            raise AssertionError(f"node exited with {node.process.returncode}:\n{node.log}")
        return bool(label_info)

    probe.spin_until(ready, STARTUP_TIMEOUT_S, f"{node.name} to start")
    return label_info


@pytest.fixture(scope="session")
def synseg(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, probe: Probe) -> Iterator[NodeProcess]:
    """The node under test, in its own process, ready (model loaded)."""
    node = start_node(tmp_path_factory, model_dir, "synseg")
    try:
        wait_until_ready(probe, node)
        yield node
    finally:
        node.stop()


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
        probe.spin_until(lambda: self.images.get_subscription_count() > 0, 20, f"{name} to subscribe")

    def send(self, msg: Any, timeout: float = 30.0) -> SimpleNamespace:
        """Publish `msg` (again every second: best-effort DDS may lose large images) until the
        node's labels, confidence and segmentation for its stamp have arrived; return them."""
        stamp = stamp_of(msg)

        def find(inbox: list[Any]) -> Any:
            return next((m for m in reversed(inbox) if stamp_of(m) == stamp), None)

        deadline = time.monotonic() + timeout
        while True:
            self.images.publish(msg)
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                outputs = SimpleNamespace(
                    labels=find(self.labels), confidence=find(self.confidence), segmentation=find(self.segmentation)
                )
                if None not in vars(outputs).values():
                    return outputs
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
