"""Stage 1 of the CPU benchmark: train a small CLIP from scratch on synthetic image-caption pairs.

The paper starts from a pretrained CLIP; no pretrained weights can be downloaded
here, so the benchmark first makes its own: an open_clip ``CLIP`` built from an
inline config and trained with open_clip's contrastive ``ClipLoss`` on the same
captions stage 2 uses. The result is a plain open_clip state dict in a
safetensors file, which ``synseg_core.weights.load_clip_weights`` (and
``model.clip_weights=FILE`` in a training config) loads into SynSeg's frozen towers.

    python -m benchmarks.stage1_clip data/train/captions.jsonl runs/clip.safetensors --steps 600
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from open_clip.loss import ClipLoss
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import save_file
from tqdm import tqdm

from synseg_core.checkpoint import _atomic_write
from synseg_core.config import OPENAI_MEAN, OPENAI_STD
from synseg_core.data.captions import JsonlCaptions, ResizeToTensor

# 64-px images with 8-px patches: an 8x8 token grid, fine enough to segment 64-px scenes.
BENCHMARK_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def load_pairs(manifest: Path, image_size: int) -> tuple[torch.Tensor, list[str]]:
    """Every (image, caption) of a JSONL manifest in memory: images uint8 [N, 3, S, S] (64-px sets are small)."""
    stream = JsonlCaptions(manifest, transform=ResizeToTensor(image_size), shuffle=False)
    images, captions = [], []
    for sample in stream:
        images.append(sample.image.mul(255).round().to(torch.uint8))
        captions.append(sample.caption)
    return torch.stack(images), captions


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> CLIP-normalised float (the mean/std SynSeg uses at inference)."""
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def train_clip(
    manifest: Path,
    out: Path,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    warmup: int = 50,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train a CLIP with ``ClipLoss`` and write its state dict to ``out`` (safetensors, atomically).

    Returns the first and last logged losses and the wall time.
    """
    config = config or BENCHMARK_CLIP
    torch.manual_seed(seed)
    model = CLIP(**config, output_dict=True)
    images, captions = load_pairs(manifest, config["vision_cfg"]["image_size"])
    tokens = SimpleTokenizer(context_length=config["text_cfg"]["context_length"])(captions)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history: list[float] = []
    model.train()
    for _ in tqdm(range(steps), desc="stage 1: CLIP", unit="step", disable=not progress):
        index = torch.randint(len(captions), (batch_size,), generator=generator)
        batch = images[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5  # captions say nothing about left and right
        batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
        output = model(normalise(batch), tokens[index])
        loss = loss_fn(output["image_features"], output["text_features"], output["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        history.append(loss.item())
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    _atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"config": json.dumps(config)}))
    window = max(1, min(20, steps // 5))
    return {
        "loss_first": sum(history[:window]) / window,
        "loss_last": sum(history[-window:]) / window,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stage1_clip",
        description="Train the CPU benchmark's small CLIP on a caption manifest (stage 1); writes an open_clip state dict.",
        epilog="Example: python -m benchmarks.stage1_clip bench/train/captions.jsonl bench/clip.safetensors --steps 600",
    )
    parser.add_argument("manifest", type=Path, help="JSONL caption manifest (e.g. from python -m synseg_core.data.synthetic)")
    parser.add_argument("out", type=Path, help="output .safetensors file")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        parser.error(f"{args.manifest}: no such manifest")
    stats = train_clip(args.manifest, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    print(f"{args.out}: contrastive loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f} in {stats['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
