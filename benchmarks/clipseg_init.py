"""The CPU benchmark's stand-in for the CLIPSeg weights SynSeg's decoder starts from.

The paper initialises FiLM and decoder from CLIPSeg, which was trained with dense masks on
PhraseCut, a dataset of its own with its own vocabulary, and then trains with MCCL on captions
only. No CLIPSeg exists for the benchmark's small CLIP, so this makes one the same way: FiLM +
decoder trained with CLIPSeg's loss (binary cross-entropy of the activation map against the
referred region) on scenes of their own seed, restricted to ``SEEN_CLASSES``. Stage 2 then sees
captions only; the ``UNSEEN_CLASSES`` never had a mask anywhere, so what the model segments of
them it learned from captions (or from the text embedding alone).

What the referring phrases say (``REFERRING``):

- ``names``: a seen class name refers to that class's pixels;
- ``attributes``: half the phrases are seen class names, half are referring expressions built from
  words that seen and unseen classes share, as PhraseCut's are ("red thing", "large shape", "blue
  star", "shape", "background"). "red thing" refers to every red shape, unseen classes included, so the
  stand-in learns to follow the text embedding beyond the 10 names; no unseen class name is ever
  said with a mask.

    python -m benchmarks.clipseg_init PHRASECUT_DIR CLIP.safetensors OUT_DIR --steps 1500
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmarks.stage1_clip import BENCHMARK_CLIP, normalise
from synseg_core.checkpoint import read_clip_config, save_model
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.synthetic import CLASSES, COLORS, OBJECT_CLASSES, STUFF_CLASSES, SceneObject, read_objects
from synseg_core.model.encoders import ImageFeatures
from synseg_core.model.synseg import create_model
from synseg_core.weights import load_clip_weights

# 7 of the 13 objects and 3 of the 6 stuff classes; the rest are only ever named in captions.
SEEN_CLASSES = ("circle", "star", "ring", "square", "triangle", "cross", "heart", "floor", "carpet", "grass")
UNSEEN_CLASSES = tuple(c for c in CLASSES if c not in SEEN_CLASSES)
WORDS_PER_IMAGE = 4  # referring phrases per image and step: the seen classes present, then absent ones (empty masks)
REFERRING = ("names", "attributes")
ENCODE_BATCH = 64  # scenes per pass when encoding the referring set once


@dataclass(frozen=True)
class Expression:
    """A referring expression of the ``attributes`` mode: the shapes whose every given attribute matches, or the stuff."""

    text: str
    color: str | None = None
    size: str | None = None
    shape: str | None = None
    stuff: bool = False

    def classes(self, objects: Sequence[SceneObject]) -> list[int]:
        """Ids of the classes whose pixels the expression refers to in a scene with these shapes."""
        if self.stuff:
            return [CLASSES.index(name) for name in STUFF_CLASSES]
        return [CLASSES.index(o.name) for o in objects if self.color in (None, o.color) and self.size in (None, o.size)
                and self.shape in (None, o.name)]


SEEN_SHAPES = tuple(c for c in SEEN_CLASSES if c in OBJECT_CLASSES)
EXPRESSIONS = (
    *(Expression(f"{color} thing", color=color) for color in COLORS),
    *(Expression(f"{size} shape", size=size) for size in ("small", "large")),
    *(Expression(f"{color} {shape}", color=color, shape=shape) for color in COLORS for shape in SEEN_SHAPES),
    Expression("shape"),
    Expression("background", stuff=True),
)
assert not any(word in UNSEEN_CLASSES for e in EXPRESSIONS for word in e.text.split())


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


def referred_expressions(objects: Sequence[Sequence[SceneObject]], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each scene, ``WORDS_PER_IMAGE // 2`` expressions (those that refer to something first, in random order).

    Returns expression ids ``[B, E]`` into ``EXPRESSIONS`` and what each refers to, ``bool [B, E, C]`` over ``CLASSES``.
    """
    count = WORDS_PER_IMAGE // 2
    ids, members = [], []
    for shapes in objects:
        order = torch.randperm(len(EXPRESSIONS), generator=generator).tolist()
        referred = [[i, EXPRESSIONS[i].classes(shapes)] for i in order]
        chosen = sorted(referred, key=lambda item: not item[1])[:count]  # stable: random order within each group
        member = torch.zeros(count, len(CLASSES), dtype=torch.bool)
        for row, (_, classes) in enumerate(chosen):
            member[row, classes] = True
        ids.append(torch.tensor([i for i, _ in chosen]))
        members.append(member)
    return torch.stack(ids), torch.stack(members)


def referred_masks(masks: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Label masks int64 [B, S, S] and the classes each phrase refers to, bool [B, K, C] -> bool [B, K, S, S]."""
    pixels = masks.flatten(1).unsqueeze(1).expand(-1, member.shape[1], -1)  # [B, K, S*S] class ids
    return member.gather(2, pixels).view(*member.shape[:2], *masks.shape[1:])


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
    referring: str = "names",
) -> dict[str, float]:
    """Train FiLM + decoder with BCE on referring masks of the seen classes; write a SynSeg checkpoint to ``out``.

    ``referring`` (``REFERRING``) says what the phrases are (module docstring); ``attributes`` needs the
    folder's ``objects.jsonl``. The FSS projector is left at its initialisation (CLIPSeg has none).
    Returns the first and last logged losses and the wall time.
    """
    if referring not in REFERRING:
        raise ValueError(f"unknown referring mode {referring!r}; expected one of {', '.join(REFERRING)}")
    torch.manual_seed(seed)
    model = load_clip_weights(create_model("tiny", seed=seed, clip_config=read_clip_config(clip_weights) or BENCHMARK_CLIP), clip_weights)
    images, masks = load_referring_data(root)
    objects = read_objects(root) if referring == "attributes" else None
    seen = torch.tensor([CLASSES.index(name) for name in SEEN_CLASSES])
    with torch.no_grad():
        words = model.encode_text(list(CLASSES), "single")  # [C, T]: every class can be referred to by its row
        if objects is not None:
            words = torch.cat([words, model.encode_text([e.text for e in EXPRESSIONS], "single")])  # then every expression
        # The CLIP is frozen and the scenes are not augmented: encode each scene once, not once per step
        # (16x fewer encoder passes at the default steps; what makes the 16x16-grid stand-in affordable).
        parts = [model.encode_image(normalise(images[i:i + ENCODE_BATCH])) for i in range(0, len(images), ENCODE_BATCH)]
        activations = [torch.cat([part.activations[layer] for part in parts]) for layer in range(len(parts[0].activations))]
        grid = parts[0].grid
        del parts
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
        member = referred[:, :, None] == torch.arange(len(CLASSES))  # [B, K, C]: the classes each phrase refers to
        if objects is not None:  # half names, half expressions
            expressions, refers = referred_expressions([objects[i] for i in index.tolist()], generator)
            names = WORDS_PER_IMAGE - expressions.shape[1]
            referred = torch.cat([referred[:, :names], expressions + len(CLASSES)], 1)
            member = torch.cat([member[:, :names], refers], 1)
        features = ImageFeatures([layer[index] for layer in activations], grid)
        logits = model.decode(features, words[referred]).logits  # [B, K, S, S]
        target = referred_masks(masks[index], member).float()
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
    parser.add_argument("--referring", choices=REFERRING, default="names",
                        help="names: seen class names only; attributes: half of them referring expressions of shared words "
                        "(colour, size, 'shape', 'background'; needs ROOT/objects.jsonl) (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in (args.root / "classes.txt", args.clip_weights):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    if args.referring == "attributes" and not (args.root / "objects.jsonl").is_file():
        parser.error(f"{args.root / 'objects.jsonl'}: no such file; --referring attributes needs the shapes' attributes "
                     "(write the folder again with python -m synseg_core.data.synthetic)")
    stats = train_clipseg_init(args.root, args.clip_weights, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               referring=args.referring)
    print(f"{args.out}: BCE {stats['loss_first']:.3f} -> {stats['loss_last']:.3f} in {stats['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
