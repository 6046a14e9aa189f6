#!/usr/bin/env bash
# The main job: set up, then segment the bundled sample scenes with the bundled demo model.
#   scripts/run_demo.sh [--vocabulary "star,ring,grass"] [more synseg_core.segment options]
#   scripts/run_demo.sh photo.jpg -v "door,chair" --checkpoint models/clipseg   # a fetched real model (offline)
set -euo pipefail
cd "$(dirname "$0")/.."
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    if [[ "${ARGS[i]}" == "--checkpoint" || "${ARGS[i]}" == "-c" ]] && [[ ! -f "${ARGS[i + 1]:-}/config.json" ]]; then
        echo "error: --checkpoint ${ARGS[i + 1]:-(missing)} is not a checkpoint folder; get the real model with" >&2
        echo "  HF_HUB_OFFLINE=0 ${SYNSEG_VENV:-.venv}/bin/python -m synseg_core.pretrained fetch clipseg-rd64-refined --out ${ARGS[i + 1]:-models/clipseg}" >&2
        exit 2
    fi
done
scripts/setup_env.sh torch
export HF_HUB_OFFLINE=1
# Default: the 19 words of the benchmark the demo model was scored on (docs/RESULTS.md).
if [[ " $* " != *" --vocabulary "* && " $* " != *" -v "* ]]; then
    ARGS=(--vocabulary "circle,star,ring,square,triangle,cross,heart,moon,arrow,diamond,hexagon,pentagon,flower,floor,carpet,grass,brick wall,sky,water" "${ARGS[@]}")
fi
"${SYNSEG_VENV:-.venv}/bin/python" -m synseg_core.segment --out demo_out "${ARGS[@]}"
echo "Overlays written to demo_out/ (open demo_out/*_overlay.png)"
