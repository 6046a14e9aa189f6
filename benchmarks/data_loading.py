"""Data-loading throughput of the training stream: images/s from webdataset shards, by DataLoader worker count.

Writes img2dataset-style shards (JPEG + caption, no precomputed categories, so noun
extraction is part of the cost) of procedural scenes, then times the exact loader the
trainer uses (decode, resize to the training size, normalise, extract categories,
collate) with 0, 1, 2, ... workers. Each setting is run ``--repeats`` times; the table
gives the median, and the speed-up relative to 0 workers measured in the same run.

    python benchmarks/data_loading.py --workers 0,1,2 --images 768 --source-size 384

Results go to stdout as a Markdown table (and to --json if given); docs/PERFORMANCE.md
("Data loading") quotes them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from synseg_core.config import OPENAI_MEAN, OPENAI_STD
from synseg_core.data.synthetic import generate_scene
from synseg_core.training.data import build_loader


def write_shards(out: Path, images: int, per_shard: int, size: int) -> str:
    """``images`` scenes of ``size`` px as JPEG shards of ``per_shard`` samples; returns the brace pattern."""
    shards = (images + per_shard - 1) // per_shard
    for shard in tqdm(range(shards), desc="writing shards", unit="shard"):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for index in range(shard * per_shard, min(images, (shard + 1) * per_shard)):
                scene = generate_scene((7, index), size)
                jpeg = io.BytesIO()
                Image.fromarray(scene.image).save(jpeg, format="JPEG", quality=90)
                for extension, data in (("jpg", jpeg.getvalue()), ("txt", scene.caption.encode())):
                    info = tarfile.TarInfo(f"{index:09d}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(out / f"{{00000..{shards - 1:05d}}}.tar")


def images_per_second(pattern: str, workers: int, batch_size: int, image_size: int, batches: int) -> float:
    """Throughput over ``batches`` batches after the first (worker start-up is excluded)."""
    loader = build_loader(pattern, image_size, OPENAI_MEAN, OPENAI_STD, batch_size, workers, seed=0,
                          max_categories=8, category_backend="rules")
    stream = iter(loader)
    next(stream)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(stream).keys)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/data_loading.py --workers 0,1,2 --repeats 3",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts (default 0,1,2)")
    parser.add_argument("--images", type=int, default=768, help="scenes written to the shards (default 768)")
    parser.add_argument("--per-shard", type=int, default=128, help="samples per shard (default 128)")
    parser.add_argument("--source-size", type=int, default=384, help="stored image side in px (default 384, img2dataset-like)")
    parser.add_argument("--image-size", type=int, default=224, help="training resolution (default 224, the paper's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per run (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    needed = args.batch_size * (args.batches + 1)
    if args.images < needed:
        parser.error(f"--images must be at least batch_size x (batches + 1) = {needed}")

    with tempfile.TemporaryDirectory() as tmp:
        pattern = write_shards(Path(tmp), args.images, args.per_shard, args.source_size)
        results = {w: [images_per_second(pattern, w, args.batch_size, args.image_size, args.batches) for _ in range(args.repeats)]
                   for w in workers}
    medians = {w: statistics.median(r) for w, r in results.items()}
    base = medians.get(0)
    print(f"\n{os.cpu_count()} CPUs visible; {args.source_size}-px JPEG shards -> {args.image_size}-px tensors, "
          f"batch {args.batch_size}, median of {args.repeats}\n")
    print("| workers | images/s (median) | runs | vs 0 workers |")
    print("|---|---|---|---|")
    for w in workers:
        ratio = f"{medians[w] / base:.2f}x" if base else "-"
        print(f"| {w} | {medians[w]:.0f} | {', '.join(f'{v:.0f}' for v in results[w])} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "images_per_s": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
