#!/usr/bin/env bash
# Makes the TensorRT 10 type stubs from PyPI (tensorrt-stubs) readable by mypy, so CI type-checks the
# TensorRT backend against the real API on machines where TensorRT itself cannot be installed.
#
#   scripts/prepare_tensorrt_stubs.sh [--wheel FILE] [OUT]
#   python -m mypy        # mypy.ini reads OUT=build/typings and checks the TensorRT backend
#
# Downloads the tensorrt-stubs wheel with --no-deps (its declared dependencies are the TensorRT wheels,
# which only NVIDIA's own index serves) and unpacks its stubs into OUT (default build/typings, git-ignored)
# instead of installing them: installed, the stub folder `tensorrt/` imports as an empty namespace package
# and looks like TensorRT to other code. --wheel FILE uses an already downloaded wheel (offline machines).
# Then it fixes what the stub generator got wrong:
#   - parameters named `in` (a Python keyword) are renamed `in_`;
#   - `add_scale_nd` has a required parameter after defaulted ones: `channel_axis` gets a default;
#   - the stubs import `tensorrt_libs`, which ships no stubs: an empty one is added.
# mypy.ini also sets ignore_errors for tensorrt_bindings (generated code), never for our modules.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
if [[ -n "${VIRTUAL_ENV:-}" && -z "${PYTHON:-}" ]]; then python="$VIRTUAL_ENV/bin/python"; fi
version=10.13.0.35.1

wheel=""
if [[ "${1:-}" == "--wheel" ]]; then wheel=$2; shift 2; fi
out=${1:-$repo/build/typings}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [[ -z "$wheel" ]]; then
  "$python" -m pip download -q --no-deps --only-binary=:all: "tensorrt-stubs==$version" -d "$scratch"
  wheel=$(ls "$scratch"/tensorrt_stubs-*.whl)
fi

mkdir -p "$out"
rm -rf "$out/tensorrt" "$out/tensorrt_bindings" "$out/tensorrt_libs"
"$python" - "$wheel" "$out" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

wheel, out = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    archive.extractall(out, [n for n in archive.namelist() if n.startswith(("tensorrt/", "tensorrt_bindings/"))])

stub = out / "tensorrt_bindings" / "tensorrt.pyi"
lines = []
for line in stub.read_text(encoding="utf-8").splitlines(keepends=True):
    if line.lstrip().startswith("def "):
        line = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", line)
        line = line.replace("channel_axis: int)", "channel_axis: int = ...)")
    lines.append(line)
stub.write_text("".join(lines), encoding="utf-8")
(out / "tensorrt_libs").mkdir(exist_ok=True)
(out / "tensorrt_libs" / "__init__.pyi").write_text("")
PY
echo "TensorRT stubs ready in $out"
