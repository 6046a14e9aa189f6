#!/usr/bin/env bash
# Create (or reuse) a virtualenv and install synseg with the given extras.
#   scripts/setup_env.sh [EXTRAS]      e.g. scripts/setup_env.sh dev   or   SYNSEG_VENV=.venv-deploy scripts/setup_env.sh deploy,ros
# Extras that need PyTorch (torch, train, onnx, dev) get the pinned torch pair first; deploy and ros never install it.
# Environment: SYNSEG_VENV (default .venv), SYNSEG_TORCH (default "torch==2.14.1 torchvision==0.29.1").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SYNSEG_VENV:-.venv}"
EXTRAS="${1:-}"
TORCH_SPEC="${SYNSEG_TORCH:-torch==2.14.1 torchvision==0.29.1}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
needs_torch=0
for extra in ${EXTRAS//,/ }; do
    case "$extra" in torch | train | onnx | dev) needs_torch=1 ;; esac
done
# torch first: a range in our requirements then installs nothing more (no surprise CUDA download).
if [ "$needs_torch" = 1 ] && ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q $TORCH_SPEC
fi
echo "[setup] installing synseg${EXTRAS:+[$EXTRAS]}"
"$VENV/bin/pip" install -q -e ".${EXTRAS:+[$EXTRAS]}"
echo "[setup] ready: $VENV"
