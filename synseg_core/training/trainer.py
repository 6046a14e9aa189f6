"""The SynSeg training loop: frozen CLIP towers, trainable FiLM + decoder + projector, MCCL (or the InfoNCE baseline).

One step (per rank, on ``batch_size / world_size`` images):

1. encode the images once with the frozen image tower (no gradient);
2. MCCL: embed the batch's unique category words with the frozen text tower
   (prompt ensemble, cached, word by word), gather them per image into ``[B, N, T]`` + mask ``[B, N]``;
   single_infonce: embed each caption;
3. decode every (image, category) pair, pool synergy features (FSS), compute the loss terms;
4. AdamW step on the trainable parameters only, with warm-up + cosine LR and gradient clipping.
   The LR is a function of the step alone, so a resumed or extended run needs no scheduler state.

Data parallelism is provably the same optimisation as one process on the global
batch: every loss term is a mean over images, so each rank scales its local mean
by ``local_count * world_size / global_count`` before DDP averages the gradients;
the sum over ranks is then exactly the global-batch mean (tests/test_distributed.py).

Randomness (decoder dropout) is re-seeded from ``(seed, step, rank)`` at every
step, so a resumed run draws the same numbers as an uninterrupted one without
any RNG state to save.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from synseg_core.checkpoint import _atomic_write, load_model, read_clip_config, save_model
from synseg_core.data.captions import CaptionBatch, CaptionStats
from synseg_core.losses.infonce import single_infonce_loss
from synseg_core.losses.mccl import MCCLWeights, mccl_loss, total_loss
from synseg_core.model.encoders import ImageFeatures
from synseg_core.model.synseg import SynSeg, create_model
from synseg_core.text.prompts import EmbeddingCache
from synseg_core.training.config import CONFIG_FILE, RunDirError, TrainingConfig, changed_keys, config_from_dict
from synseg_core.training.data import build_loader, endless
from synseg_core.training.distributed import Distributed, init_distributed
from synseg_core.training.state import (
    find_resumable,
    list_checkpoints,
    mark_latest,
    remove_temporaries,
    restore_model,
    save_checkpoint,
)

log = logging.getLogger("synseg.train")

METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"


class TrainableHead(nn.Module):
    """FiLM + decoder + projector as one module: what DDP wraps, so the frozen towers are never synchronised."""

    def __init__(self, model: SynSeg) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.projector = model.projector
        self.__dict__["synseg"] = model  # a plain reference, not a submodule: DDP must see only the trainable parts

    def forward(self, activations: list[torch.Tensor], grid: tuple[int, int], text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block activations [B, 1+h*w, width] each, text [B, N, T] -> synergy features f, f̄ [B, N, T]."""
        model: SynSeg = self.__dict__["synseg"]
        synergy = model.synergy(model.decode(ImageFeatures(activations, grid), text))
        return synergy.foreground, synergy.background


@dataclass
class StepTerms:
    """One rank's loss terms (``loss_*`` with graph, others logged) and, per term, how many images it averages."""

    terms: dict[str, torch.Tensor]
    counts: dict[str, float]


Objective = Callable[[SynSeg, nn.Module, ImageFeatures, CaptionBatch], StepTerms]


def category_embeddings(model: SynSeg, cache: EmbeddingCache, words: list[str], template_set: str) -> torch.Tensor:
    """Prompt-ensemble embeddings [V, T] of ``words``, each encoded on its own and cached.

    Encoding word by word keeps a word's embedding independent of which words shared its
    encoder batch (batched matmuls differ in the last bits), so a resumed run, whose cache
    starts empty, sees exactly the embeddings of an uninterrupted one.
    """
    encoder = model.text_encoder
    embeddings = cache.get_or_compute(
        encoder.fingerprint, template_set, words,
        lambda missing: torch.cat([encoder.embed_prompts([word], template_set) for word in missing]),
    )
    return embeddings.to(encoder.token_embedding.weight.device)


def mccl_objective(config: TrainingConfig) -> Objective:
    weights = MCCLWeights(**config.loss.weights)
    template_set = config.data.template_set
    cache = EmbeddingCache()  # the training run's own: entries made elsewhere may come from batched encoding

    def objective(model: SynSeg, head: nn.Module, features: ImageFeatures, batch: CaptionBatch) -> StepTerms:
        device = features.activations[0].device
        vocab = category_embeddings(model, cache, batch.vocab, template_set)  # [V, T], each unique word once
        index = batch.category_index.to(device)
        mask = batch.category_mask.to(device)
        text = vocab[index]  # [B, N, T]; padded slots repeat word 0 and are masked out
        foreground, background = head(features.activations, features.grid, text)
        terms = mccl_loss(foreground.float(), background.float(), text, mask, weights)
        per_image = mask.sum(dim=1)
        single, pair = float((per_image >= 1).sum()), float((per_image >= 2).sum())
        counts = {name: pair if name.endswith(("back", "sep")) else single for name in terms}
        return StepTerms(terms, counts)

    return objective


def infonce_objective(config: TrainingConfig, dist: Distributed, per_rank_batch: int) -> Objective:
    temperature = config.loss.temperature

    def objective(model: SynSeg, head: nn.Module, features: ImageFeatures, batch: CaptionBatch) -> StepTerms:
        device = features.activations[0].device
        encoder = model.text_encoder
        with torch.no_grad():
            captions = F.normalize(encoder(encoder.tokenizer(batch.captions).to(device)).float(), dim=-1)  # [B, T]
        foreground, _ = head(features.activations, features.grid, captions.unsqueeze(1))
        all_captions, valid = dist.gather_rows(captions, per_rank_batch)
        targets = torch.arange(len(batch.captions), device=device) + dist.rank * per_rank_batch
        terms = single_infonce_loss(foreground[:, 0].float(), all_captions, targets, valid, temperature)
        return StepTerms(terms, {name: float(len(batch.captions)) for name in terms})

    return objective


def lr_factor(step: int, config: TrainingConfig) -> float:
    """Linear warm-up to 1, then cosine decay to min_lr / lr at the last step."""
    optim, total = config.optim, config.train.steps
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
    floor = optim.min_lr / optim.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: SynSeg, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and norm scales (1-d) get no weight decay."""
    params = list(model.trainable_parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.optim.lr, betas=config.optim.betas)


def seed_step(seed: int, step: int, rank: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


def build_model(config: TrainingConfig, seed: int) -> SynSeg:
    """A fresh model: from ``model.init`` (a SynSeg checkpoint) or the preset + overrides + CLIP/CLIPSeg weights."""
    spec = config.model
    if spec.init:
        log.info("starting from the SynSeg checkpoint %s%s", spec.init, f" with {spec.overrides}" if spec.overrides else "")
        return load_model(spec.init, **spec.overrides)
    overrides = dict(spec.overrides)
    described = read_clip_config(spec.clip_weights) if spec.clip_weights and "clip_config" not in overrides else None
    if described is not None:  # a CLIP of one's own (benchmarks/stage1_clip.py) says what shape it has
        overrides["clip_config"] = described
        log.info("%s describes its CLIP in its metadata: building the towers from it (model.overrides.clip_config)", spec.clip_weights)
    model = create_model(spec.preset, seed=seed, **overrides)
    if spec.clip_weights or spec.clipseg_weights:
        from synseg_core.weights import import_clipseg_weights, load_clip_weights

        if spec.clip_weights:
            load_clip_weights(model, spec.clip_weights)
            log.info("CLIP towers loaded from %s", spec.clip_weights)
        if spec.clipseg_weights:
            layout = import_clipseg_weights(model, spec.clipseg_weights)
            log.info("decoder initialised from CLIPSeg (%s layout) %s", layout, spec.clipseg_weights)
    return model


class CategoryPreview:
    """What the category extractor made of the run's first captions, logged once by rank 0: a few
    caption -> categories pairs from the first batch, then the most frequent categories of the first ``captions``
    (container words such as "patch" at the top would mean a stop-list to extend: data.extra_stop_words)."""

    def __init__(self, captions: int = 1000, examples: int = 5, top: int = 20) -> None:
        self.limit, self.examples, self.top = captions, examples, top
        self.counts: Counter = Counter()
        self.seen = 0
        self.done = False

    def observe(self, batch: CaptionBatch) -> None:
        if self.done:
            return
        if self.seen == 0:
            for caption, categories in list(zip(batch.captions, batch.categories, strict=True))[: self.examples]:
                log.info("categories of %r: %s", caption, categories)
        for categories in batch.categories:
            self.counts.update(categories)
        self.seen += len(batch.captions)
        if self.seen >= self.limit:
            self.report()

    def report(self) -> None:
        if self.done or not self.seen:
            return
        self.done = True
        common = ", ".join(f"{word} {count}" for word, count in self.counts.most_common(self.top))
        log.info("most frequent categories in the first %d captions (of %d distinct): %s", self.seen, len(self.counts), common)


class MetricsWriter:
    """Rank 0's metric records: one JSON object per line in metrics.jsonl, and TensorBoard scalars under tb/."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self.tensorboard = None
        if not enabled:
            return
        if self.path.is_file():  # records past the checkpoint we resume from are about to be redone
            kept = self._records_up_to(start_step)
            _atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: metrics go to %s only (pip install tensorboard)", self.path)
        else:
            self.tensorboard = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)

    def _records_up_to(self, step: int) -> list[str]:
        """The file's lines of records up to ``step``; a line cut off by a kill mid-write is dropped with a warning."""
        kept = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                recorded = json.loads(line)["step"]
            except (ValueError, TypeError, KeyError):
                log.warning("%s:%d: dropping an unreadable metrics record (cut off when the run was killed?)", self.path, number)
                continue
            if recorded <= step:
                kept.append(line)
        return kept

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and name != "step":
                    self.tensorboard.add_scalar(f"train/{name}", value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def prepare_run_dir(run_dir: Path, config: TrainingConfig, resume: bool, dist: Distributed) -> None:
    """Create RUN_DIR and save the resolved config; refuse to overwrite an earlier run unless resuming."""
    saved = run_dir / CONFIG_FILE
    if dist.is_main:
        if not resume and (list_checkpoints(run_dir) or (run_dir / MODEL_DIR).exists()):
            raise RunDirError(f"{run_dir} already holds a trained run; continue it with --resume or choose another --out")
        if saved.is_file():
            import yaml

            previous = config_from_dict(yaml.safe_load(saved.read_text()))
            changed = [key for key in changed_keys(previous, config) if key != "out"]  # a moved run dir is fine
            if changed:
                log.warning("resuming with changed settings: %s", ", ".join(changed))
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(run_dir)
        _atomic_write(saved, lambda tmp: Path(tmp).write_text(config.to_yaml()))
    dist.barrier()


def train(config: TrainingConfig, run_dir: str | Path, resume: bool = False) -> Path:
    """Train as ``config`` says, writing into ``run_dir``; returns the final model directory ``run_dir/model``."""
    config = dataclasses.replace(config, out=str(run_dir))
    dist = init_distributed(config.train.device)
    try:
        return _train(config, Path(run_dir), resume, dist)
    finally:
        dist.close()


def _train(config: TrainingConfig, run_dir: Path, resume: bool, dist: Distributed) -> Path:
    spec = config.train
    if not config.data.train:
        raise ValueError("no training data: set data.train to a JSONL manifest or webdataset shards "
                         "(e.g. data.train=data/train.jsonl or data.train='shards/{00000..00099}.tar')")
    if spec.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size {spec.batch_size} (the global batch) is not divisible by {dist.world_size} ranks")
    per_rank_batch = spec.batch_size // dist.world_size
    prepare_run_dir(run_dir, config, resume, dist)

    found = find_resumable(run_dir) if resume else None
    if found is not None:
        model = SynSeg(found.config)
        restore_model(model, found.tensors, found.directory)
        training_state, trainer_state = found.training, found.trainer_state
        start_step = int(trainer_state["step"])
        log.info("resuming from %s (step %d)", found.directory, start_step)
        if dist.is_main:  # latest may lag behind (killed before it moved) or name an unreadable checkpoint
            mark_latest(found.directory)
    else:
        if resume:
            log.info("no checkpoint in %s yet: starting from step 0", run_dir)
        model = build_model(config, spec.seed)
        training_state, trainer_state, start_step = None, {}, 0
    model.to(dist.device).train()  # the frozen towers stay in eval mode by construction

    device = dist.device
    use_amp = device.type == "cuda" and spec.amp != "none"
    amp_dtype = torch.float16 if spec.amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and spec.amp == "fp16")
    optimizer = build_optimizer(model, config)
    if training_state is not None:
        optimizer.load_state_dict(training_state["optimizer"])
        scaler.load_state_dict(training_state["scaler"])

    head: nn.Module = TrainableHead(model)
    if dist.enabled:
        head = DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None,
                                       gradient_as_bucket_view=True)
    objective = mccl_objective(config) if config.loss.name == "mccl" else infonce_objective(config, dist, per_rank_batch)

    loader = build_loader(
        config.data.train, config.data.image_size or model.config.image_size, model.config.mean, model.config.std,
        per_rank_batch, config.data.num_workers, spec.seed, config.data.max_categories, config.data.category_backend,
        rank=dist.rank, world_size=dist.world_size, pin_memory=device.type == "cuda",
        stop_words=config.data.stop_words, extra_stop_words=config.data.extra_stop_words,
    )
    data_state = trainer_state.get("data")
    if data_state is not None:
        try:
            if data_state["world_size"] != dist.world_size:
                raise ValueError(f"the checkpoint was written by {data_state['world_size']} ranks, this run has {dist.world_size}")
            loader.load_state_dict(data_state["ranks"][dist.rank])
        except ValueError as exc:  # the saved positions do not map onto this run's readers
            epoch = 1 + max(state["epoch"] for state in data_state["ranks"])
            log.warning("%s: the data stream continues at the start of epoch %d", exc, epoch)
            loader.set_epoch(epoch)

    images_seen = int(trainer_state.get("images_seen", 0))
    elapsed = float(trainer_state.get("elapsed_s", 0.0))
    metrics = MetricsWriter(run_dir, start_step, dist.is_main)
    progress = tqdm(total=spec.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                    disable=not (dist.is_main and spec.progress))
    trainable = list(model.trainable_parameters())
    batches = endless(loader)
    preview = CategoryPreview()
    window_start, window_images = time.perf_counter(), 0.0

    def checkpoint_now(step: int) -> None:
        states = dist.gather_objects(loader.state_dict())
        if dist.is_main:
            training = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}
            state = {"data": {"world_size": dist.world_size, "ranks": states}, "images_seen": images_seen,
                     "elapsed_s": elapsed + time.perf_counter() - window_start}
            path = save_checkpoint(run_dir, step, model, training, state, config.to_yaml(), spec.keep_checkpoints)
            log.info("checkpoint %s", path)

    for step in range(start_step, spec.steps):
        batch = next(batches)
        if dist.is_main:
            preview.observe(batch)
        seed_step(spec.seed, step, dist.rank)
        lr = config.optim.lr * lr_factor(step, config)  # a pure function of the step: nothing to save, and
        for group in optimizer.param_groups:           # extending a run (--resume train.steps=N) re-plans it
            group["lr"] = lr
        images = batch.images.to(device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
        with autocast:
            with torch.no_grad():
                features = model.encode_image(images)
            result = objective(model, head, features, batch)

        names = sorted(result.terms)
        local = torch.tensor([result.counts[n] for n in names] + [len(batch.keys), loader.stats.total_skipped], dtype=torch.float64)
        total = dist.sum(local)
        scales = {n: float(local[i] * dist.world_size / total[i]) if total[i] > 0 else 0.0 for i, n in enumerate(names)}
        loss = total_loss({n: t * scales[n] for n, t in result.terms.items() if n.startswith("loss")})

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, spec.grad_clip if spec.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()

        done = step + 1
        images_seen += int(total[-2])
        window_images += float(total[-2])
        progress.update(1)
        if done % spec.log_every == 0 or done == spec.steps:
            weighted = dist.sum(torch.stack([result.terms[n].detach().double() * local[i] for i, n in enumerate(names)]))
            values = {n: float(weighted[i] / total[i]) if total[i] > 0 else 0.0 for i, n in enumerate(names)}
            now = time.perf_counter()
            record = {
                "step": done, "epoch": loader.epoch, "lr": lr,
                "loss": sum(v for n, v in values.items() if n.startswith("loss")), **values,
                "grad_norm": float(grad_norm), "images_per_s": window_images / max(now - window_start, 1e-9),
                "images_seen": images_seen, "bad_samples": int(total[-1]),
            }
            metrics.write(record)
            progress.set_postfix({k.removeprefix("loss_"): f"{record[k]:.3f}" for k in ("loss", *[n for n in names if n.startswith("loss")])}
                                 | {"img/s": f"{record['images_per_s']:.1f}"})
            elapsed += now - window_start
            window_start, window_images = now, 0.0
        if done % spec.ckpt_every == 0 or done == spec.steps:
            checkpoint_now(done)
    progress.close()
    metrics.close()
    if dist.is_main:
        preview.report()  # a run shorter than the preview

    final = run_dir / MODEL_DIR
    data_stats = dist.gather_objects(loader.stats)
    if dist.is_main:
        save_model(model, final, metadata={"step": str(spec.steps)})
        log.info("final model %s", final)
        # Each kind of bad sample was warned about once per process as it occurred; this is the whole count.
        stats = CaptionStats(sum(s.samples for s in data_stats), sum((s.skipped for s in data_stats), Counter()))
        log.log(logging.WARNING if stats.total_skipped else logging.INFO, "training data over the whole run (all ranks): %s", stats)
    dist.barrier()
    return final
