#!/usr/bin/env bash
# Makes the TensorRT 10 type stubs from PyPI (tensorrt-stubs) readable by mypy, so CI type-checks the
# TensorRT backend against the real API on machines where TensorRT itself cannot be installed.
#
#   scripts/prepare_tensorrt_stubs.sh [--no-install] [OUT]
#   python -m mypy        # mypy.ini reads OUT=build/typings and checks the TensorRT backend
#
# Installs tensorrt-stubs with --no-deps (its declared dependencies are the TensorRT wheels, which only
# NVIDIA's own index serves) into the active virtual environment (or $PYTHON), copies the stubs into OUT
# (default build/typings, git-ignored) and fixes what the stub generator got wrong:
#   - parameters named `in` (a Python keyword) are renamed `in_`;
#   - `add_scale_nd` has a required parameter after defaulted ones: `channel_axis` gets a default;
#   - the stubs import `tensorrt_libs`, which ships no stubs: an empty one is added.
# mypy.ini also sets ignore_errors for tensorrt_bindings (generated code), never for our modules.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
if [[ -n "${VIRTUAL_ENV:-}" && -z "${PYTHON:-}" ]]; then python="$VIRTUAL_ENV/bin/python"; fi
version=10.13.0.35.1

install=1
if [[ "${1:-}" == "--no-install" ]]; then install=0; shift; fi
out=${1:-$repo/build/typings}

if [[ $install == 1 ]]; then
  "$python" -m pip install -q --no-deps "tensorrt-stubs==$version"
fi
site=$("$python" -c 'import os, tensorrt_stubs; print(os.path.dirname(os.path.dirname(tensorrt_stubs.__file__)))') || {
  echo "tensorrt-stubs is not installed; run without --no-install" >&2; exit 1; }

mkdir -p "$out"
rm -rf "$out/tensorrt" "$out/tensorrt_bindings" "$out/tensorrt_libs"
cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$out/"
mkdir -p "$out/tensorrt_libs"
: > "$out/tensorrt_libs/__init__.pyi"

"$python" - "$out/tensorrt_bindings/tensorrt.pyi" <<'PY'
import re
import sys

path = sys.argv[1]
text = open(path, encoding="utf-8").read()
fixed = []
for line in text.splitlines(keepends=True):
    if line.lstrip().startswith("def "):
        line = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", line)
        line = re.sub(r"channel_axis: int\)", "channel_axis: int = ...)", line)
    fixed.append(line)
open(path, "w", encoding="utf-8").write("".join(fixed))
PY
echo "TensorRT stubs ready in $out"
