"""The package as `colcon build` installs it: CMake configure, build and install with the default
options (Python packages included), with ROS 2 from PyPI, then used from the install prefix only."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fresh_environment

from synseg_ros.testing import REPO, interfaces_site

# Imports the node and the messages the way `ros2 run synseg_ros synseg` would find them, then runs
# the installed executable (without a model_path, so the node stops at its parameter check).
FROM_THE_PREFIX = """
import json, runpy, sys, synseg_core, synseg_ros.msg, synseg_ros.node
from synseg_ros.msg import LabelInfo
type(LabelInfo).__import_type_support__()  # loads the compiled type support
found = {"node": synseg_ros.node.__file__, "core": synseg_core.__file__, "msg": synseg_ros.msg.__file__,
         "type_support": LabelInfo._TYPE_SUPPORT is not None}
sys.argv = [sys.argv[1], "--ros-args", "-p", "model_path:=''"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stopped:
    found["exit_code"] = stopped.code
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("rosidl_generator_py") is None or not (
        shutil.which("cmake") or (Path(sys.prefix) / "bin" / "cmake").exists()
    ):
        # rclpy is here (tests/ros/conftest.py), and the script that installs it installs these too: their absence
        # is a broken setup, not an environment without ROS, so it must not pass as a skip.
        pytest.fail("the rosidl/ament build tools are not installed: run scripts/build_ros_interfaces.sh")
    prefix = tmp_path_factory.mktemp("colcon_install")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build_ros_interfaces.sh"), "--no-install", "--with-python"],
        env={**fresh_environment(), "SYNSEG_ROS_PREFIX": str(prefix), "PYTHON": sys.executable},
        check=True, capture_output=True, timeout=300,
    )
    return prefix


@pytest.fixture(scope="module")
def run_from_prefix(prefix: Path) -> tuple[dict[str, object], str]:
    """FROM_THE_PREFIX in a new shell that sourced only the prefix's env.sh, outside the repository:
    what it found, and its log."""
    result = subprocess.run(
        ["bash", "-c", 'source "$0/env.sh" && exec "$@"', str(prefix),
         sys.executable, "-c", FROM_THE_PREFIX, str(prefix / "lib" / "synseg_ros" / "synseg")],
        env=fresh_environment(), cwd=prefix, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1]), result.stdout + result.stderr


def test_the_install_has_the_executable_launch_config_and_both_python_packages(prefix):
    executable = prefix / "lib" / "synseg_ros" / "synseg"
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = prefix / "share" / "synseg_ros"
    assert (share / "launch" / "segment.launch.py").is_file()
    assert (share / "config" / "synseg.yaml").is_file()
    assert (share / "msg" / "LabelInfo.msg").is_file()
    site = interfaces_site(prefix)
    for module in ("node.py", "settings.py", "msg/__init__.py", "srv/__init__.py"):
        assert (site / "synseg_ros" / module).is_file(), module
    assert (site / "synseg_core" / "__init__.py").is_file()
    # Ours, not the empty one rosidl generates: the merged package must still describe itself.
    assert (site / "synseg_ros" / "__init__.py").read_text() == (REPO / "synseg_ros" / "__init__.py").read_text()


def test_the_node_module_and_the_messages_import_from_the_prefix(prefix, run_from_prefix):
    found, _ = run_from_prefix
    site = str(interfaces_site(prefix))
    for key in ("node", "core", "msg"):
        assert str(found[key]).startswith(site), (key, found[key])
    assert found["type_support"]


def test_the_installed_executable_runs_the_node(run_from_prefix):
    found, log = run_from_prefix
    assert found["exit_code"] == 1
    assert "invalid parameters: model_path is empty" in log
