#!/usr/bin/env bash
# One-shot GPU check (issue 12), for a CUDA machine with ~10 minutes and no network:
#
#   bash benchmarks/gpu_check.sh                 # the full check -> build/gpu_check/gpu_check.{json,md}
#   bash benchmarks/gpu_check.sh --dry-run       # print the steps, run nothing
#   bash benchmarks/gpu_check.sh --smoke         # the same pipeline on the CPU with the tiny preset (a few s)
#
# It installs the package from this repository (no dependencies are fetched: torch, open_clip, onnx and
# onnxruntime must already be there), then measures with benchmarks/latency.py, i.e. the product's backends:
#   1. torch CUDA FP32 / FP16 / FP16 + CUDA graphs: network alone and end to end (640x480 camera frame in,
#      labels out) at 448x448, K = 1, 20, 100, batch 1 and 8 (batch 8 at K = 20);
#   2. label agreement FP16 (and FP16 + graphs) vs FP32 on the same frame;
#   3. ONNX export on the GPU (model on CUDA, dynamo exporter), timed, and ONNX Runtime on CUDA when
#      onnxruntime-gpu is installed;
# and merges everything into one JSON and one Markdown table. A failing step is recorded and the others run.
set -uo pipefail

OUT=build/gpu_check
PYTHON=${PYTHON:-python3}
DRY=0
SMOKE=0
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --smoke) SMOKE=1 ;;
        --out) shift; OUT=${1:?--out needs a folder} ;;
        --python) shift; PYTHON=${1:?--python needs an interpreter} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.." || exit 1

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu; MODEL=(--preset tiny); SIZE=64; TORCH_ROWS=torch; REPEATS=2; WARMUP=1; BATCH=2
else
    DEVICE=cuda; MODEL=(--preset vit-b-16); SIZE=448; TORCH_ROWS=torch,torch-fp16,torch-fp16-graphs; REPEATS=20; WARMUP=3; BATCH=8
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: the cache below must not land inside the repository
STATUS="$OUT/steps.txt"
: > "$STATUS"

step() {  # step NAME COMMAND...: run (or print) one step, record ok/failed with its duration
    local name=$1; shift
    echo "== $name: $*"
    if [ "$DRY" = 1 ]; then echo "$name dry-run" >> "$STATUS"; return 0; fi
    local start=$SECONDS
    if "$@" > "$OUT/$name.log" 2>&1; then
        echo "$name ok $((SECONDS - start))s" >> "$STATUS"
    else
        echo "$name failed $((SECONDS - start))s (see $name.log)" >> "$STATUS"
        tail -n 20 "$OUT/$name.log"
        return 1
    fi
}

export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" XDG_CACHE_HOME="$OUT/cache"

if [ "$SMOKE" = 1 ]; then  # a smoke run uses the interpreter's environment as it is (PYTHONPATH above)
    echo "install skipped (smoke)" >> "$STATUS"
else
    step install "$PYTHON" -m pip install --no-deps --no-build-isolation --quiet -e .
fi

step environment "$PYTHON" - "$OUT/environment.json" "$DEVICE" <<'EOF'
import json, platform, sys
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info |= {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda, "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
try:
    import onnxruntime
    info |= {"onnxruntime": onnxruntime.__version__, "ort_providers": onnxruntime.get_available_providers()}
except ImportError:
    info["onnxruntime"] = None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(info)
sys.exit(0 if sys.argv[2] == "cpu" or info["cuda_available"] else 1)
EOF

# 1 + 2: torch FP32 / FP16 / FP16 + graphs, network grid (with batch 8 at K = 20) and label agreement, then
# end to end per frame at batch 1.
# If capturing CUDA graphs fails, the eager rows are measured on their own, so the FP32/FP16 figures still come.
torch_rows() {  # torch_rows NAME BACKENDS
    step "$1" "$PYTHON" benchmarks/latency.py "${MODEL[@]}" --device "$DEVICE" --backends "$2" --sizes "$SIZE" \
        --classes 1,20,100 --batch "$BATCH" --e2e-classes 1,20,100 --e2e-batch "$BATCH" --repeats "$REPEATS" --warmup "$WARMUP" \
        --sections grid,end_to_end --no-onnx-text --work-dir "$OUT/work" --out "$OUT/$1"
}
torch_rows torch "$TORCH_ROWS" || torch_rows torch_eager "${TORCH_ROWS/,torch-fp16-graphs/}"

# 3: ONNX export with the model on the GPU (timed), then ONNX Runtime on CUDA if onnxruntime-gpu is there.
step onnx_export "$PYTHON" - "$OUT/onnx_export.json" "$DEVICE" "$SIZE" "${MODEL[1]}" <<'EOF'
import json, sys, time
import numpy as np
import torch
from synseg_core.export import export_onnx
from synseg_core.model.synseg import create_model
from synseg_core.runtime.onnx_backend import OnnxBackend
from synseg_core.runtime.processing import preprocess

out, device, size, preset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = create_model(preset, seed=0).to(device).eval()
folder = out.replace(".json", "_folder")
start = time.perf_counter()
meta = export_onnx(model, folder, input_size=size, text_encoder=True)
result = {"device": device, "export_s": round(time.perf_counter() - start, 1), "parity": meta.parity}
try:
    import onnxruntime
    ort_device = "cuda" if device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    backend = OnnxBackend(folder, device=ort_device)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pixels = preprocess(frame, (size, size), model.config.mean, model.config.std)
    text = np.eye(20, model.text_dim, dtype=np.float32)
    backend.predict(pixels, text, (480, 640))
    times = []
    for _ in range(10):
        t = time.perf_counter(); backend.predict(pixels, text, (480, 640)); times.append(time.perf_counter() - t)
    result |= {"onnxruntime_device": ort_device, "onnxruntime_predict_k20_ms": round(1000 * float(np.median(times)), 2)}
except ImportError as exc:
    result["onnxruntime"] = f"not installed ({exc})"
json.dump(result, open(out, "w"), indent=2)
print(result)
EOF

step report "$PYTHON" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None
report = {"steps": (out / "steps.txt").read_text().splitlines(), "environment": load("environment.json"),
          "torch": load("torch.json") or load("torch_eager.json"), "onnx_export": load("onnx_export.json")}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
lines = ["# GPU check", "", "Steps: " + "; ".join(report["steps"]), "", f"Environment: {report['environment']}", ""]
torch_md = out / "torch.md" if (out / "torch.md").is_file() else out / "torch_eager.md"
lines += [torch_md.read_text() if torch_md.is_file() else "torch step: no results", ""]
lines += [f"ONNX export on the GPU: {report['onnx_export']}", ""]
(out / "gpu_check.md").write_text("\n".join(lines))
print("\n".join(lines))
EOF

echo "results: $OUT/gpu_check.json, $OUT/gpu_check.md"
grep -q failed "$STATUS" && exit 1
exit 0
