#!/usr/bin/env bash
# The main job: set up, then segment the bundled sample scenes with the bundled demo model.
#   scripts/run_demo.sh [--vocabulary "star,ring,grass"] [more synseg_core.segment options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh torch
export HF_HUB_OFFLINE=1
ARGS=("$@")
# Default: the 19 words of the benchmark the demo model was scored on (docs/RESULTS.md).
if [[ " $* " != *" --vocabulary "* && " $* " != *" -v "* ]]; then
    ARGS=(--vocabulary "circle,star,ring,square,triangle,cross,heart,moon,arrow,diamond,hexagon,pentagon,flower,floor,carpet,grass,brick wall,sky,water" "${ARGS[@]}")
fi
"${SYNSEG_VENV:-.venv}/bin/python" -m synseg_core.segment --out demo_out "${ARGS[@]}"
echo "Overlays written to demo_out/ (open demo_out/*_overlay.png)"
