"""Make what the torch-free tests compare against, in the torch venv (scripts/run_tests.sh calls it).

    python tests/deploy/make_fixtures.py OUT

OUT/checkpoint   a copy of the bundled demo model (config.json + model.safetensors)
OUT/export       its FP32 ONNX export with the text tower and tokenizer (python -m synseg_core.export --text-encoder)
OUT/expected     the torch backend's labels on the bundled samples: <sample>.npy, int32 [H, W] (-1 = unlabeled)
OUT/fixtures.json the vocabulary, threshold, template set and the sample files used
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from synseg_core.export import main as export_main
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.segment import DEMO_MODEL, SAMPLES, read_rgb

# The demo model's benchmark vocabulary (scripts/run_demo.sh, docs/RESULTS.md).
VOCABULARY = ["circle", "star", "ring", "square", "triangle", "cross", "heart", "moon", "arrow", "diamond", "hexagon",
              "pentagon", "flower", "floor", "carpet", "grass", "brick wall", "sky", "water"]


def main(out: Path) -> None:
    checkpoint = out / "checkpoint"
    shutil.copytree(DEMO_MODEL, checkpoint, ignore=shutil.ignore_patterns("onnx"))
    if export_main([str(checkpoint), "--text-encoder", "--out", str(out / "export"), "--quiet"]) != 0:
        raise SystemExit("the ONNX export of the demo model failed")
    segmenter = Segmenter.from_checkpoint(checkpoint, backend="torch")
    expected = out / "expected"
    expected.mkdir()
    samples = sorted(SAMPLES.glob("*.png"))
    for path in samples:
        np.save(expected / f"{path.stem}.npy", segmenter.segment(read_rgb(path), VOCABULARY).labels)
    (out / "fixtures.json").write_text(json.dumps({
        "vocabulary": VOCABULARY, "threshold": segmenter.threshold, "template_set": segmenter.template_set,
        "samples": [p.name for p in samples],
    }, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
