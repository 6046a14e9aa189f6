#!/usr/bin/env bash
# Set up everything the tests need, then run them:
#   1. .venv with synseg[dev] (torch first, then ONNX Runtime, ROS 2 Jazzy from PyPI, ...)
#   2. build the ROS messages (msg/, srv/) into .ros_interfaces/
#   3. lint (ruff) and type-check the TensorRT backend against the TensorRT 10 API stubs (TensorRT itself cannot be installed here)
#   4. pytest (extra arguments are passed on, e.g. scripts/run_tests.sh -k mccl)
#   5. without extra arguments: the torch-free deployment. The torch venv makes the fixtures (an ONNX export of
#      the demo model with its text tower, the torch backend's labels on the bundled samples); .venv-deploy gets
#      synseg[deploy,ros] and no torch, and runs tests/deploy (Segmenter, the segment CLI, the ROS node on ONNX Runtime).
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
[ "$#" -eq 0 ] || exit 0

echo "[tests] torch-free deployment: fixtures from the torch venv"
FIXTURES="$(mktemp -d)"
trap 'rm -rf "$FIXTURES"' EXIT
"$PY" tests/deploy/make_fixtures.py "$FIXTURES"
DEPLOY_VENV="${SYNSEG_DEPLOY_VENV:-.venv-deploy}"
SYNSEG_VENV="$DEPLOY_VENV" scripts/setup_env.sh deploy,ros
DEPLOY_PY="$DEPLOY_VENV/bin/python"
"$DEPLOY_PY" -m pip install -q "pytest>=8" "pytest-timeout>=2"
if "$DEPLOY_PY" -c "import torch" 2>/dev/null; then
    echo "[tests] $DEPLOY_VENV can import torch: the deployment extras must not pull it in" >&2
    exit 1
fi
echo "[tests] pytest tests/deploy in $DEPLOY_VENV (no torch)"
# The environment of a fresh shell: the deploy tests put the built interfaces on the paths themselves.
env -u PYTHONPATH -u AMENT_PREFIX_PATH -u LD_LIBRARY_PATH SYNSEG_DEPLOY_FIXTURES="$FIXTURES" \
    "$DEPLOY_PY" -m pytest -q -c tests/deploy/pytest.ini tests/deploy
