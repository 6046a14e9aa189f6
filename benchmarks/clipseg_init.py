"""The CPU benchmark's stand-in for the CLIPSeg weights SynSeg's decoder starts from.

The paper initialises FiLM and decoder from CLIPSeg, which was trained with dense masks on
PhraseCut, a dataset of its own with its own vocabulary, and then trains with MCCL on captions
only. No CLIPSeg exists for the benchmark's small CLIP, so this makes one the same way: FiLM +
decoder trained with CLIPSeg's loss (binary cross-entropy of the activation map against the
referred region) on scenes of their own seed, restricted to ``SEEN_CLASSES``. Stage 2 then sees
captions only; the ``UNSEEN_CLASSES`` never had a mask anywhere, so what the model segments of
them it learned from captions (or from the text embedding alone).

    python -m benchmarks.clipseg_init PHRASECUT_DIR CLIP.safetensors OUT_DIR --steps 1500
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.stage1_clip import BENCHMARK_CLIP, normalise
from synseg_core.checkpoint import save_model
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.synthetic import CLASSES
from synseg_core.model.synseg import create_model
from synseg_core.weights import load_clip_weights

# 7 of the 13 objects and 3 of the 6 stuff classes; the rest are only ever named in captions.
SEEN_CLASSES = ("circle", "star", "ring", "square", "triangle", "cross", "heart", "floor", "carpet", "grass")
UNSEEN_CLASSES = tuple(c for c in CLASSES if c not in SEEN_CLASSES)
WORDS_PER_IMAGE = 4  # referring phrases per image and step: the seen classes present, then absent ones (empty masks)


def load_referring_data(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 3, S, S] and label masks int64 [N, S, S] of a segmentation folder (64-px sets are small)."""
    dataset = get_dataset("folder", root)
    images, masks = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        images.append(torch.from_numpy(np.array(sample.image)).permute(2, 0, 1))
        masks.append(torch.from_numpy(sample.mask.astype(np.int64)))
    return torch.stack(images), torch.stack(masks)


def referred_classes(masks: torch.Tensor, seen: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[B, WORDS_PER_IMAGE] class ids per image: its seen classes in random order, then random absent seen classes."""
    rows = []
    for mask in masks:
        order = seen[torch.randperm(len(seen), generator=generator)]
        present = torch.isin(order, mask.unique())
        rows.append(torch.cat([order[present], order[~present]])[:WORDS_PER_IMAGE])
    return torch.stack(rows)


def train_clipseg_init(
    root: Path,
    clip_weights: Path,
    out: Path,
    steps: int = 1500,
    batch_size: int = 16,
    lr: float = 1e-3,
    min_lr: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Train FiLM + decoder with BCE on referring masks of the seen classes; write a SynSeg checkpoint to ``out``.

    The FSS projector is left at its initialisation (CLIPSeg has none). Returns the first and last
    logged losses and the wall time.
    """
    torch.manual_seed(seed)
    model = load_clip_weights(create_model("tiny", seed=seed, clip_config=BENCHMARK_CLIP), clip_weights)
    images, masks = load_referring_data(root)
    seen = torch.tensor([CLASSES.index(name) for name in SEEN_CLASSES])
    with torch.no_grad():
        words = model.encode_text(list(CLASSES), "single")  # [C, T]: every class can be referred to by its row
    parameters = list(model.decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(steps), desc="CLIPSeg stand-in", unit="step", disable=not progress):
        for group in optimizer.param_groups:  # cosine from lr to min_lr, as CLIPSeg's recipe
            group["lr"] = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / steps))
        index = torch.randint(len(images), (batch_size,), generator=generator)
        referred = referred_classes(masks[index], seen, generator)  # [B, K]
        with torch.no_grad():
            features = model.encode_image(normalise(images[index]))
        logits = model.decode(features, words[referred]).logits  # [B, K, S, S]
        target = (masks[index].unsqueeze(1) == referred[:, :, None, None]).float()
        loss = F.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        history.append(loss.item())
    save_model(model.eval(), out)
    window = max(1, min(20, steps // 5))
    return {"loss_first": sum(history[:window]) / window, "loss_last": sum(history[-window:]) / window,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.clipseg_init",
        description="Train the CPU benchmark's CLIPSeg stand-in (FiLM + decoder, BCE on referring masks of the seen "
                    f"classes {', '.join(SEEN_CLASSES)}); writes a SynSeg checkpoint.",
        epilog="Example: python -m benchmarks.clipseg_init bench/phrasecut bench/clip.safetensors bench/clipseg_init",
    )
    parser.add_argument("root", type=Path, help="segmentation folder (classes.txt, images/, masks/), e.g. from synseg_core.data.synthetic")
    parser.add_argument("clip_weights", type=Path, help="the stage-1 CLIP (.safetensors from benchmarks.stage1_clip)")
    parser.add_argument("out", type=Path, help="output SynSeg checkpoint directory")
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in (args.root / "classes.txt", args.clip_weights):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    stats = train_clipseg_init(args.root, args.clip_weights, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    print(f"{args.out}: BCE {stats['loss_first']:.3f} -> {stats['loss_last']:.3f} in {stats['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
