#!/usr/bin/env bash
# Set up everything the tests need, then run them:
#   1. .venv with synseg[dev] (torch first, then ONNX Runtime, ROS 2 Jazzy from PyPI, ...)
#   2. build the ROS messages (msg/, srv/) into .ros_interfaces/
#   3. lint (ruff) and type-check the TensorRT backend against the TensorRT 10 API stubs (TensorRT itself cannot be installed here)
#   4. pytest (extra arguments are passed on, e.g. scripts/run_tests.sh -k mccl)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SYNSEG_VENV:-.venv}"
export HF_HUB_OFFLINE=1

scripts/setup_env.sh dev
PY="$PWD/$VENV/bin/python"
[ -x "$PY" ] || PY="$VENV/bin/python"

echo "[tests] building ROS interfaces"
PYTHON="$PY" scripts/build_ros_interfaces.sh
# shellcheck disable=SC1091
source .ros_interfaces/env.sh

echo "[tests] ruff"
"$PY" -m ruff check synseg_core synseg_ros benchmarks tests launch

echo "[tests] type-checking the TensorRT backend"
PYTHON="$PY" scripts/prepare_tensorrt_stubs.sh
"$PY" -m mypy --config-file mypy.ini synseg_core/runtime/tensorrt_backend.py

echo "[tests] pytest"
"$PY" -m pytest -q "$@"
