"""What MCCL asks of a segmentation: its four terms when the activation maps ARE the true masks.

A diagnostic of the CPU benchmark, not a method. The activation maps S_c are fixed to each
caption category's ground-truth mask, and only what MCCL sees besides the maps is trained: FiLM,
the reduction of the deepest block and the FSS projector, on the training captions' categories.
The terms it ends with are compared with those trained SynSeg runs end with (``run_terms``): a
run that ends *below* the ground truth has found maps that MCCL prefers to the true segmentation.

    python -m benchmarks.mccl_oracle TRAIN_DIR SYNSEG_CHECKPOINT [--fss-source visual]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.stage1_clip import normalise
from synseg_core.checkpoint import load_model
from synseg_core.data.synthetic import CLASSES
from synseg_core.losses.mccl import TERMS, mccl_loss
from synseg_core.model.decoder import DecoderOutput

MAP_EPS = 1e-4  # the oracle map is the mask clipped to [eps, 1 - eps], so its logit is finite


def load_captioned_masks(train_dir: Path, max_categories: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Images uint8 [N, 3, S, S], masks int64 [N, S, S], caption category ids [N, max_categories] (-1 = none) and the words
    they index: the classes (the masks' ids), then the caption words with no region (CC12M-like captions name some),
    whose true mask is empty."""
    images, masks, categories, words = [], [], [], list(CLASSES)
    for line in (train_dir / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        image = np.asarray(Image.open(train_dir / record["image"]).convert("RGB"))
        images.append(torch.from_numpy(image.copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy(np.asarray(Image.open(train_dir / "masks" / f"{Path(record['image']).stem}.png"), np.int64)))
        names = record["categories"][:max_categories]
        words += [name for name in dict.fromkeys(names) if name not in words]
        ids = [words.index(name) for name in names]
        categories.append(torch.tensor(ids + [-1] * (max_categories - len(ids))))
    return torch.stack(images), torch.stack(masks), torch.stack(categories), words


def oracle_terms(
    train_dir: Path,
    checkpoint: Path,
    fss_source: str = "conditional",
    steps: int = 600,
    batch_size: int = 16,
    max_categories: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, float]:
    """MCCL terms (mean over the last fifth of the steps) with S_c = the true masks; FiLM, reduction and projector trained.

    ``checkpoint`` supplies the frozen CLIP towers (any SynSeg checkpoint of the benchmark); its decoder and
    projector weights are re-initialised, so only the maps' ground truth carries over.
    """
    torch.manual_seed(seed)
    model = load_model(checkpoint, fss_source=fss_source)
    for module in (model.decoder.film, model.decoder.reduces[0], model.projector):
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    trained = [*model.decoder.film.parameters(), *model.decoder.reduces[0].parameters(), *model.projector.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.05)
    images, masks, categories, vocabulary = load_captioned_masks(train_dir, max_categories)
    with torch.no_grad():
        words = model.encode_text(vocabulary, "single")
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    model.train()
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        ids, valid = categories[index].clamp(min=0), categories[index] >= 0  # [B, N]
        text = words[ids]
        with torch.no_grad():
            features = model.encode_image(normalise(images[index]))
        output = model.decode(features, text)
        truth = (masks[index].unsqueeze(1) == ids[:, :, None, None]).float()
        oracle = DecoderOutput(logits=torch.logit(truth.clamp(MAP_EPS, 1 - MAP_EPS)), conditional=output.conditional, visual=output.visual)
        synergy = model.synergy(oracle)
        terms = mccl_loss(synergy.foreground, synergy.background, text, valid)
        loss = sum(terms[f"loss_{term}"] for term in TERMS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({term: terms[f"loss_{term}"].item() for term in TERMS})
    tail = history[-max(1, steps // 5):]
    return {term: statistics.fmean(h[term] for h in tail) for term in TERMS}


def run_terms(run_dir: Path, last: int = 5) -> dict[str, float]:
    """MCCL terms a training run with every weight 1 ended with: the mean of its last ``last`` metric records."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()][-last:]
    return {term: statistics.fmean(r[f"loss_{term}"] for r in records) for term in TERMS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mccl_oracle", description=__doc__.split("\n\n")[0])
    parser.add_argument("train_dir", type=Path, help="synthetic training folder (captions.jsonl with categories, masks/)")
    parser.add_argument("checkpoint", type=Path, help="a SynSeg checkpoint of the benchmark (supplies the frozen CLIP)")
    parser.add_argument("--fss-source", choices=("conditional", "visual"), default="conditional")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps (default: %(default)s)")
    args = parser.parse_args(argv)
    terms = oracle_terms(args.train_dir, args.checkpoint, args.fss_source, args.steps)
    print(json.dumps({"fss_source": args.fss_source, **terms, "total": sum(terms.values())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
