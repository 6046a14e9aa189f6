"""Score a model on a segmentation dataset: ``python -m synseg_core.evaluate --checkpoint DIR --dataset NAME --data-root ROOT``.

Writes ``results.json`` (settings, mIoU, per-class IoU, pixel accuracy, the
confusion matrix), ``results.md``, ``class_iou.png`` and ``overlays.png``
(image / ground truth / prediction) into ``--out``. The protocol preset (tcl or
sclip), PAMR on/off, the background score and the dataset variant (e.g.
context59 vs context60) are recorded with every number.

Under ``torchrun`` each process scores a shard of the images and the confusion
matrices are summed exactly (gloo on CPU, NCCL with ``--device cuda``, which
means each process's own GPU, ``cuda:LOCAL_RANK``): the result equals a
one-process run.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synseg_core.checkpoint import CheckpointError
from synseg_core.data.benchmarks import get_dataset, list_datasets
from synseg_core.data.segmentation import DatasetError
from synseg_core.evaluation.protocols import Protocol, get_protocol, list_protocols
from synseg_core.runtime.factory import torch_options
from synseg_core.runtime.segmenter import Segmenter, list_backends
from synseg_core.text.prompts import list_template_sets

if TYPE_CHECKING:
    from synseg_core.evaluation.distributed import Shard

log = logging.getLogger("synseg.evaluate")
METHODS = ("synseg", "maskclip", "naclip", "clearclip")
TRAINING_FREE = ("maskclip", "naclip", "clearclip")


def build_segmenter(args: argparse.Namespace, device: str) -> Segmenter:
    """The model to score on ``device``, on the requested backend; the training-free baselines run on the
    checkpoint's (or file's) CLIP towers. ``synseg`` runs whatever the checkpoint's config names (a NACLIP
    folder made by ``synseg_core.pretrained`` included)."""
    if args.method == "synseg":
        return Segmenter.from_checkpoint(args.checkpoint, backend=args.backend, device=device, precision=args.precision,
                                         **torch_options(args.backend, args.cuda_graphs, args.compile))
    fast_path = torch_options("torch", args.cuda_graphs, args.compile)
    from synseg_core.baselines.maskclip import maskclip_segmenter
    from synseg_core.baselines.naclip import from_towers
    from synseg_core.checkpoint import load_model
    from synseg_core.weights import from_clip

    if args.method == "maskclip":
        from synseg_core.model.synseg import create_model
        from synseg_core.weights import load_clip_weights

        model = load_model(args.checkpoint) if args.checkpoint is not None else load_clip_weights(create_model(args.preset), args.clip_weights)
        return maskclip_segmenter(model.to(device), device=device, precision=args.precision, backend_options=fast_path)
    if args.checkpoint is not None:
        model = load_model(args.checkpoint)
        rival = model if model.config.method == args.method else from_towers(model, args.method)
    else:
        rival = from_clip(args.clip_weights, args.method, args.preset)
    return Segmenter.from_model(rival.to(device), device=device, precision=args.precision, backend_options=fast_path)


def build_protocol(args: argparse.Namespace) -> Protocol:
    return get_protocol(
        args.protocol, short_side=args.short_side, crop=args.crop, stride=args.stride, template_set=args.templates,
        pamr=args.pamr, background_override=args.background_threshold,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.evaluate",
        description="Score a SynSeg checkpoint (or the MaskCLIP baseline) on a segmentation dataset: mIoU, per-class IoU and "
        "pixel accuracy with sliding-window inference under a named protocol. Writes results.json, results.md, "
        "class_iou.png and overlays.png into --out.",
        epilog=(
            "Examples:\n"
            "  python -m synseg_core.evaluate -c runs/cc12m/model --dataset voc21 --data-root data/ --protocol tcl\n"
            "  python -m synseg_core.evaluate -c runs/cc12m/model --dataset context59 --data-root data/ --protocol tcl --no-pamr\n"
            "  python -m synseg_core.evaluate -c runs/cc12m/model --dataset folder --data-root my_scenes/ --protocol sclip\n"
            "  # procedural 64-px scenes (held-out seed) for a model trained on synthetic data\n"
            "  python -m synseg_core.data.synthetic data/synthetic_val --num 200 --seed 1 --size 64\n"
            "  python -m synseg_core.evaluate -c runs/tiny/model --dataset folder --data-root data/synthetic_val --protocol synthetic\n"
            "  python -m synseg_core.evaluate --method maskclip --clip-weights ViT-B-16.pt --preset vit-b-16-openai \\\n"
            "      --dataset voc21 --data-root data/\n"
            "  python -m synseg_core.evaluate --method naclip --clip-weights ViT-B-16.pt --preset vit-b-16-openai \\\n"
            "      --dataset voc21 --data-root data/ --protocol sclip\n"
            "  torchrun --nproc_per_node 4 -m synseg_core.evaluate -c runs/cc12m/model --dataset coco_stuff --data-root data/\n"
            "Datasets: " + ", ".join(list_datasets()) + " ('folder' = ROOT/classes.txt, images/, masks/, split.txt)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", "-c", type=Path, help="SynSeg checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--dataset", "-d", required=True, choices=list_datasets(), help="benchmark name (context59 / context60 etc.)")
    parser.add_argument("--data-root", "-r", type=Path, required=True, help="folder holding the dataset")
    parser.add_argument("--split", default="val", help="dataset split (default: %(default)s)")
    parser.add_argument("--method", choices=METHODS, default="synseg",
                        help="synseg (the checkpoint's own model), or a training-free baseline on its CLIP towers: maskclip, "
                        "naclip, clearclip (default: %(default)s)")
    parser.add_argument("--clip-weights", type=Path, help="a training-free --method without --checkpoint: an open_clip/OpenAI CLIP weights file")
    parser.add_argument("--preset", default="vit-b-16", help="model preset the --clip-weights fit (default: %(default)s)")
    parser.add_argument("--protocol", "-p", default="tcl", choices=list_protocols(), help="evaluation preset (default: %(default)s)")
    parser.add_argument("--pamr", action=argparse.BooleanOptionalAction, default=None, help="PAMR refinement (default: the protocol's)")
    parser.add_argument("--background-threshold", type=float, help="constant background score (default: protocol's, 0.4 with PAMR / 0.5 without)")
    parser.add_argument("--templates", choices=list_template_sets(), help="prompt template set (default: the protocol's)")
    parser.add_argument("--short-side", type=int, help="resize the short side to this (0 = native size; default: the protocol's)")
    parser.add_argument("--crop", type=int, help="sliding-window size in pixels (default: the protocol's)")
    parser.add_argument("--stride", type=int, help="sliding-window stride in pixels (default: the protocol's)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per backend call (default: %(default)s)")
    parser.add_argument("--backend", default="torch", choices=list_backends(), help="inference backend for synseg (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda (under torchrun: cuda:LOCAL_RANK) or cuda:N (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", help="backend precision: fp32, fp16, bf16, int8 ... (default: %(default)s)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None, help="torch backend: replay CUDA graphs (default: on with a CUDA device)")
    parser.add_argument("--compile", action="store_true", help="torch backend: run the model through torch.compile")
    parser.add_argument("--max-images", type=int, help="score only the first N images (a quick check; recorded in results.json)")
    parser.add_argument("--overlays", type=int, default=8, help="images in overlays.png (default: %(default)s)")
    parser.add_argument("--out", "-o", type=Path, default=Path("eval_out"), help="output folder (default: %(default)s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.method == "synseg" and args.checkpoint is None:
        parser.error("--checkpoint is required (or use --method maskclip with --clip-weights)")
    if args.method in TRAINING_FREE and args.checkpoint is None and args.clip_weights is None:
        parser.error(f"--method {args.method} needs --checkpoint (its CLIP towers are used) or --clip-weights")
    if args.method in TRAINING_FREE and args.backend != "torch":
        parser.error(f"the {args.method} baseline runs on the torch backend only")
    import torch  # evaluation runs the model in torch (sliding windows, PAMR, torchrun)

    try:
        torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device}: {exc}")


def run(args: argparse.Namespace, shard: Shard) -> dict[str, Any] | None:
    from synseg_core.evaluation.inference import SlidingWindow, pamr_refiner
    from synseg_core.evaluation.report import write_report
    from synseg_core.evaluation.runner import evaluate_dataset

    protocol = build_protocol(args)
    dataset = get_dataset(args.dataset, args.data_root, split=args.split)
    device = str(shard.device)
    segmenter = build_segmenter(args, device)
    refine = pamr_refiner(device) if protocol.pamr else None
    inference = SlidingWindow(segmenter, protocol, refine=refine, batch_size=args.batch_size)
    if shard.is_main:
        log.info("%s: %s", args.dataset, dataset)
        log.info("%s", protocol.describe(dataset.background_index is not None))
    start = time.perf_counter()
    evaluation = evaluate_dataset(inference, dataset, shard, max_images=args.max_images, keep_examples=args.overlays,
                                  progress=not args.quiet and shard.is_main)
    if not shard.is_main:
        return None
    settings = {
        "method": args.method,
        "model": str(args.checkpoint or args.clip_weights),
        "backend": segmenter.backend.name,
        "precision": segmenter.precision,
        "dataset": args.dataset,
        "dataset_source": dataset.source,
        "split": args.split,
        "max_images": args.max_images,
        "protocol": protocol.to_dict(),
        "protocol_description": protocol.describe(dataset.background_index is not None),
        "world_size": shard.world_size,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return write_report(args.out, evaluation, settings)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    from synseg_core.evaluation.distributed import finish, init_from_environment

    shard = init_from_environment(args.device)
    try:
        results = run(args, shard)
    except (DatasetError, CheckpointError, FileNotFoundError) as exc:
        log.error("%s", exc)
        log.error("evaluation refused: no score is reported for a dataset or model that cannot be read and scored completely")
        return 2
    except (ValueError, FloatingPointError, ImportError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        finish(shard)
    if results is not None:
        log.info("mIoU %.2f  pixel accuracy %.2f  (%s, %s) -> %s", results["miou"], results["pixel_accuracy"],
                 args.dataset, results["protocol_description"], args.out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
