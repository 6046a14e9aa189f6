"""Segment images with a vocabulary: ``python -m synseg_core.segment IMAGE... --vocabulary door,chair``.

Writes, per image, ``<name>_labels.png`` (label ids; 255 = unlabeled, 16-bit when
the vocabulary has more than 254 words), ``<name>_overlay.png`` (colour overlay
with a legend; a word has the same colour in every run) and ``<name>_labels.json``
(label id -> word). A bad image is reported and skipped; the others are still
processed and the exit code is non-zero.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from synseg_core import INSTALL_TORCH
from synseg_core.checkpoint import CheckpointError
from synseg_core.runtime.factory import torch_options
from synseg_core.runtime.segmenter import Segmenter, list_backends
from synseg_core.text.prompts import check_vocabulary, list_template_sets
from synseg_core.visualize import add_legend, label_image, overlay

log = logging.getLogger("synseg.segment")
PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_MODEL = PACKAGE_DIR / "assets" / "demo_model"
SAMPLES = PACKAGE_DIR / "assets" / "samples"


def read_rgb(path: Path) -> np.ndarray:
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not an image file (name the images, e.g. {path / '*.png'})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (corrupt, empty or an unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_png(path: Path, rgb_or_labels: np.ndarray) -> None:
    array = rgb_or_labels
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"{path}: could not write")


def parse_vocabulary(text: str) -> list[str]:
    return check_vocabulary([w for w in text.split(",")])


def build_segmenter(args: argparse.Namespace) -> Segmenter:
    if args.export is not None:
        return Segmenter.from_export(args.export, backend=args.backend or "onnxruntime", threshold=args.threshold,
                                     template_set=args.templates, device=args.device)
    args.backend = args.backend or "torch"
    options = torch_options(args.backend, args.cuda_graphs, args.compile)
    if args.checkpoint is not None:
        return Segmenter.from_checkpoint(
            args.checkpoint, backend=args.backend, device=args.device, precision=args.precision, input_size=args.input_size,
            threshold=args.threshold, template_set=args.templates, **options,
        )
    if (DEMO_MODEL / "config.json").is_file():
        log.info("using the bundled demo model %s", DEMO_MODEL)
        return Segmenter.from_checkpoint(
            DEMO_MODEL, backend=args.backend, device=args.device, precision=args.precision, input_size=args.input_size,
            threshold=args.threshold, template_set=args.templates, **options,
        )
    from synseg_core.model.synseg import create_model

    log.warning("no --checkpoint and no bundled demo model: using a RANDOM-INIT tiny model (masks are meaningless)")
    return Segmenter.from_model(create_model("tiny", seed=0), device=args.device, precision=args.precision, backend_options=options,
                                input_size=args.input_size, threshold=args.threshold, template_set=args.templates)


def segment_file(segmenter: Segmenter, path: Path, vocabulary: list[str], out: Path) -> dict[str, object]:
    image = read_rgb(path)
    result = segmenter.segment(image, vocabulary)
    stem = path.stem
    write_png(out / f"{stem}_labels.png", label_image(result.labels, len(vocabulary)))
    present = sorted(int(i) for i in np.unique(result.labels) if i >= 0)
    write_png(out / f"{stem}_overlay.png", add_legend(overlay(image, result.labels, vocabulary), vocabulary, present))
    unlabeled = 255 if len(vocabulary) <= 254 else 65535
    info = {
        "image": str(path),
        "labels": {str(i): w for i, w in enumerate(vocabulary)},
        "unlabeled": unlabeled,
        "threshold": segmenter.threshold,
        "pixel_fraction": {vocabulary[i]: float((result.labels == i).mean()) for i in present},
    }
    (out / f"{stem}_labels.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.segment",
        description="Open-vocabulary segmentation of image files. For every image, writes NAME_labels.png "
        "(label ids, 255 = unlabeled), NAME_overlay.png (colours + legend) and NAME_labels.json (id -> word).",
        epilog="Example: python -m synseg_core.segment photo.jpg --vocabulary 'door,chair,floor' --out results/\n"
        "Without IMAGE arguments the bundled sample scenes are used. Without --checkpoint the bundled demo model is used.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="*", type=Path, help="image files (PNG/JPEG/...); default: the bundled samples")
    parser.add_argument("--vocabulary", "-v", required=True, help="comma-separated words, e.g. 'door,chair'")
    parser.add_argument("--checkpoint", "-c", type=Path, help="SynSeg checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--export", "-e", type=Path,
                        help="an ONNX export folder made with --text-encoder (python -m synseg_core.export): runs without "
                        "the checkpoint and without PyTorch")
    parser.add_argument("--out", "-o", type=Path, default=Path("segment_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--backend", choices=list_backends(), help="inference backend (default: torch; onnxruntime with --export)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"], help="fp16 on CUDA; int8 with onnxruntime (default: %(default)s)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None, help="torch backend: replay CUDA graphs (default: on with a CUDA device)")
    parser.add_argument("--compile", action="store_true", help="torch backend: run the model through torch.compile")
    parser.add_argument("--threshold", type=float, help="score below which a pixel is unlabeled (default: the model's)")
    parser.add_argument("--templates", choices=list_template_sets(), help="prompt template set (default: the model's)")
    parser.add_argument("--input-size", type=int, help="network input size in pixels, a multiple of the model's patch size "
                        "(16 for a ViT-B/16; default: the model's image size)")
    parser.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.export is not None and (args.checkpoint is not None or args.input_size is not None):
        parser.error("--export runs the export folder alone, at the input size it was exported for: "
                     "leave out --checkpoint and --input-size")
    if args.export is not None and args.backend == "torch":
        parser.error("an export folder runs on --backend onnxruntime or tensorrt; the torch backend takes --checkpoint")
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    try:
        vocabulary = parse_vocabulary(args.vocabulary)
    except ValueError as exc:
        log.error("bad --vocabulary: %s", exc)
        return 2
    images = args.images or sorted(SAMPLES.glob("*.png"))
    if not images:
        log.error("no images given and no bundled samples found")
        return 2
    try:
        segmenter = build_segmenter(args)
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            log.error("cannot load the model: %s", exc)
        else:
            log.error("cannot load the model: the %s backend needs PyTorch: %s; without PyTorch, run an ONNX export: "
                      "--export DIR --backend onnxruntime", args.backend, INSTALL_TORCH)
        return 2
    except (CheckpointError, ValueError, ImportError) as exc:
        log.error("cannot load the model: %s", exc)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in images:
        try:
            info = segment_file(segmenter, path, vocabulary, args.out)
        except (OSError, ValueError) as exc:
            failures += 1
            log.error("%s", exc)
            continue
        fractions = ", ".join(f"{w} {100 * f:.0f}%" for w, f in info["pixel_fraction"].items()) or "nothing above threshold"  # type: ignore[union-attr]
        log.info("%s -> %s (%s)", path, args.out / f"{path.stem}_overlay.png", fractions)
    if failures:
        log.error("%d of %d images failed", failures, len(images))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
