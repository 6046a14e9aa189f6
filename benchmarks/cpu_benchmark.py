"""The CPU benchmark: does SynSeg's MCCL + FSS learn to segment from captions alone, at toy scale?

    python -m benchmarks.cpu_benchmark              # the full run (50 min measured on 2 busy cores: docs/RESULTS.md)
    python -m benchmarks.cpu_benchmark --quick      # a smoke-sized run of every step (a few minutes)

Mirrors the paper's setup on procedural scenes (``synseg_core.data.synthetic``):

1. data: a training set (captions + exact masks) and a held-out evaluation set from other seeds;
2. stage 1: a small open_clip CLIP trained from scratch with ``ClipLoss`` on the captions
   (``benchmarks.stage1_clip``), standing in for the pretrained CLIP;
3. stage 2: ``python -m synseg_core.train`` with that CLIP frozen, no masks: SynSeg (MCCL + FSS),
   each MCCL term removed in turn, and the single-category InfoNCE baseline, for 3 seeds each;
4. evaluation: ``python -m synseg_core.evaluate`` on the held-out scenes, plus the training-free
   MaskCLIP baseline on the same frozen CLIP;
5. ``docs/RESULTS.md`` with the table, and (full runs) the best SynSeg seed as the bundled demo
   model plus a few held-out scenes as the bundled samples.

Every finished step is kept under ``--out``; running the command again skips it, so an
interrupted benchmark resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.stage1_clip import BENCHMARK_CLIP, train_clip
from synseg_core.baselines.maskclip import maskclip_segmenter
from synseg_core.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_model
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.segmentation import SegmentationDataset
from synseg_core.data.synthetic import CLASSES, write_synthetic_dataset
from synseg_core.evaluate import main as evaluate_main
from synseg_core.evaluation.inference import SlidingWindow
from synseg_core.evaluation.protocols import get_protocol
from synseg_core.evaluation.report import write_json, write_text
from synseg_core.runtime.segmenter import Segmenter

log = logging.getLogger("synseg.benchmark")
REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "synseg_core"
TRAIN_SEED, EVAL_SEED = 1, 2  # scene seeds: evaluation scenes never occur in training
STAGE2_CONFIG = PACKAGE / "configs" / "tiny.yaml"
PROTOCOL = "synthetic"
MAX_DEMO_BYTES = 25 * 1024 * 1024
NUM_SAMPLES = 6
SELECTIVITY_IMAGES = 60
NOTES = Path(__file__).resolve().parent / "results_notes.md"  # hand-written analysis appended to RESULTS.md

# The paper's Table 3 (v2): mIoU drop when one term is removed, on Context / Object / Stuff.
PAPER_DELTAS = {"align": (-0.4, -0.7, -0.4), "cont": (-0.3, -0.6, -0.4), "back": (-0.4, -0.9, -0.7), "sep": (-2.2, -3.9, -2.7)}


@dataclass(frozen=True)
class Scale:
    train_scenes: int
    eval_scenes: int
    stage1_steps: int
    stage1_batch: int
    stage2_steps: int
    stage2_batch: int
    seeds: tuple[int, ...]


FULL = Scale(train_scenes=2000, eval_scenes=200, stage1_steps=500, stage1_batch=128, stage2_steps=300, stage2_batch=16, seeds=(0, 1, 2))
QUICK = Scale(train_scenes=48, eval_scenes=12, stage1_steps=4, stage1_batch=16, stage2_steps=3, stage2_batch=8, seeds=(0,))


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    overrides: tuple[str, ...]  # stage-2 training overrides (empty for a training-free method)
    trained: bool = True
    removes: str | None = None  # the MCCL term an ablation removes


METHODS = (
    Method("maskclip", "MaskCLIP (training-free dense CLIP)", (), trained=False),
    Method("infonce", "Single-category InfoNCE (caption-level, TCL/GroupViT-style)", ("loss.name=single_infonce",)),
    Method("synseg", "SynSeg (MCCL + FSS)", ("loss.name=mccl",)),
    # Not in the paper: FSS pools the text-free features before FiLM (tests the FiLM shortcut; see the analysis).
    Method("synseg_visual", "SynSeg, FSS on text-free features (fss_source=visual; not in the paper)",
           ("loss.name=mccl", "model.overrides.fss_source=visual")),
    *(Method(f"no_{term}", f"SynSeg w/o L_{term}", ("loss.name=mccl", f"loss.weights.{term}=0"), removes=term) for term in ("align", "cont", "back", "sep")),
)


@dataclass
class Outcome:
    """What the benchmark measured, per method key."""

    mious: dict[str, list[float]]  # per seed
    accuracy: dict[str, float]  # pixel accuracy, mean over seeds
    selectivity: dict[str, tuple[float, float]]  # mean score of a present class inside / outside its mask, mean over seeds
    synseg_models: dict[str, Path]  # run name -> model directory
    stage1: dict[str, float]


def selectivity(inference: SlidingWindow, dataset: SegmentationDataset, count: int) -> tuple[float, float]:
    """Mean class score inside vs. outside that class's true mask, over the classes present in each image.

    A map that segments scores far higher inside; a map that does not, about the same. This separates
    "the maps do not localise" from "the maps localise but the argmax across classes goes wrong".
    """
    text = inference.encode(dataset.class_names)
    inside, outside = [], []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        scores = inference.class_scores(sample.image, text)
        for label in np.unique(sample.mask[sample.mask >= 0]):
            region = sample.mask == label
            inside.append(float(scores[label][region].mean()))
            if (~region).any():
                outside.append(float(scores[label][~region].mean()))
    return statistics.fmean(inside), statistics.fmean(outside)


def run_name(method: Method, seed: int) -> str:
    return f"{method.key}_seed{seed}"


def stage2_command(method: Method, seed: int, scale: Scale, clip: Path, manifest: Path, run_dir: Path, resume: bool) -> list[str]:
    """The ``python -m synseg_core.train`` command of one stage-2 run (the stage-1 CLIP frozen, no masks)."""
    overrides = json.dumps({"clip_config": BENCHMARK_CLIP})
    command = [
        sys.executable, "-m", "synseg_core.train", "--config", str(STAGE2_CONFIG), "--out", str(run_dir),
        f"model.overrides={overrides}", f"model.clip_weights={clip}", f"data.train={manifest}",
        f"train.steps={scale.stage2_steps}", f"train.batch_size={scale.stage2_batch}", f"train.seed={seed}",
        f"train.ckpt_every={max(1, scale.stage2_steps // 2)}", "train.progress=false", "train.device=cpu", *method.overrides,
    ]
    return [*command, "--resume"] if resume else command


def summarise(mious: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per method: mean, sample standard deviation (0 for one value) and count of the per-seed mIoUs."""
    return {
        key: {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
        for key, values in mious.items() if values
    }


def results_markdown(summary: dict[str, dict[str, float]], outcome: Outcome, context: dict[str, Any]) -> str:
    """docs/RESULTS.md: the setup, the table, the per-term ablation deltas next to the paper's, and how it was run."""
    scale = context["scale"]
    reference = summary.get("synseg")
    lines = [
        "# CPU benchmark results",
        "",
        "Generated by `benchmarks/cpu_benchmark.py`; do not edit by hand.",
        "",
        f"Command: `{context['command']}`  ",
        f"Finished: {context['finished']}. Wall time: {context['wall_minutes']:.1f} min in {len(context['invocations'])} "
        "invocation(s) of that command (an interrupted run resumes; each invocation's minutes and load below). "
        f"{context['cpus']} CPU cores; a 1-minute load average above the core count means other processes shared them.",
        "",
        "| invocation started | minutes | load at start | load at end |",
        "|---|---:|---:|---:|",
        *(f"| {i['started']} | {i['minutes']:.1f} | {i['load_start']:.1f} | {i['load_end']:.1f} |" for i in context["invocations"]),
        "",
        "## Setup",
        "",
        f"- Data: procedural scenes (`synseg_core.data.synthetic`, {len(CLASSES)} classes: 13 objects + 6 stuff backgrounds, "
        f"64x64 px): {scale['train_scenes']} training scenes (seed {TRAIN_SEED}), {scale['eval_scenes']} held-out evaluation "
        f"scenes (seed {EVAL_SEED}). Training sees captions only, never masks.",
        f"- Stage 1: open_clip `CLIP` (ViT: 64 px, patch 8, width 96, 4 layers; text: width 64, 2 layers; embed dim 64) trained "
        f"from scratch with `open_clip.loss.ClipLoss`, {scale['stage1_steps']} steps x {scale['stage1_batch']} pairs; one run "
        f"(contrastive loss {context['stage1']['loss_first']:.2f} -> {context['stage1']['loss_last']:.2f}), shared by every method.",
        f"- Stage 2: `python -m synseg_core.train --config synseg_core/configs/tiny.yaml` with that CLIP frozen, "
        f"{scale['stage2_steps']} steps x {scale['stage2_batch']} images, seeds {list(scale['seeds'])}; ablations set one "
        "`loss.weights.<term>=0`; the baseline uses `loss.name=single_infonce` (caption embedding vs. mask-pooled synergy feature).",
        f"- Evaluation: `python -m synseg_core.evaluate --protocol {PROTOCOL} --dataset folder`: {context['protocol']}. "
        "Every pixel belongs to one of the 19 classes (no background class, no threshold); mIoU over the 19 classes.",
        "",
        "## mIoU (%) on held-out scenes",
        "",
        "| Method | mIoU mean ± std | seeds | per seed | pixel acc. | Δ vs SynSeg | class score in / out of its mask |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for method in METHODS:
        stats = summary.get(method.key)
        if stats is None:
            continue
        delta = "" if reference is None or method.key == "synseg" else f"{stats['mean'] - reference['mean']:+.2f}"
        seeds = ", ".join(f"{v:.2f}" for v in outcome.mious[method.key])
        inside, outside = outcome.selectivity[method.key]
        lines.append(f"| {method.label} | {stats['mean']:.2f} ± {stats['std']:.2f} | {stats['n']} | {seeds} | "
                     f"{outcome.accuracy[method.key]:.2f} | {delta} | {inside:.3f} / {outside:.3f} |")
    lines += [
        "",
        "std is the sample standard deviation over training seeds (MaskCLIP has no training, so one value). "
        f"The last column is the mean score S_c of each class present in an image inside vs. outside its true mask "
        f"(first {SELECTIVITY_IMAGES} held-out scenes, mean over seeds): equal values mean the maps do not localise the class.",
        "",
        "## Ablations next to the paper's Table 3",
        "",
        "| Removed term | Δ mIoU here (mean ± std of the ablation) | paper Δ Context / Object / Stuff | same direction? |",
        "|---|---:|---:|---|",
    ]
    for method in METHODS:
        if method.removes is None or method.key not in summary or reference is None:
            continue
        change = summary[method.key]["mean"] - reference["mean"]
        paper = " / ".join(f"{v:+.1f}" for v in PAPER_DELTAS[method.removes])
        lines.append(f"| L_{method.removes} | {change:+.2f} (± {summary[method.key]['std']:.2f}) | {paper} | {direction(change, reference['std'] + summary[method.key]['std'])} |")
    lines += ["", "## Reading", "", *context["reading"], ""]
    if context.get("notes"):
        lines += ["## Analysis", "", context["notes"].strip(), ""]
    return "\n".join(lines)


def direction(change: float, spread: float) -> str:
    """Does removing a term hurt, as the paper says? Only a change larger than the seed spread counts."""
    if change < -spread:
        return "yes (removing it hurts)"
    if change > spread:
        return "no (removing it helps here)"
    return "not resolved (within the seed spread)"


def reading(summary: dict[str, dict[str, float]]) -> list[str]:
    """Plain statements generated from the numbers (no claims the numbers do not support)."""
    synseg = summary.get("synseg")
    if synseg is None:
        return ["SynSeg did not finish; no comparison is possible."]
    notes = []
    for key, name in (("maskclip", "the training-free MaskCLIP baseline"), ("infonce", "the single-category InfoNCE baseline")):
        if key in summary:
            gap = synseg["mean"] - summary[key]["mean"]
            spread = synseg["std"] + summary[key]["std"]
            verdict = "beats" if gap > spread else "is below" if gap < -spread else "is within the seed spread of"
            if synseg["n"] < 2:
                verdict = "scores above" if gap > 0 else "scores below"  # one seed: no spread to judge by
            notes.append(f"- SynSeg {verdict} {name} ({synseg['mean']:.2f} vs {summary[key]['mean']:.2f}, Δ {gap:+.2f}).")
    if "synseg_visual" in summary:
        variant = summary["synseg_visual"]
        notes.append(f"- FSS on text-free features (not in the paper): {variant['mean']:.2f} ± {variant['std']:.2f} "
                     f"vs SynSeg {synseg['mean']:.2f} ± {synseg['std']:.2f}.")
    ablations = {m.removes: summary[m.key]["mean"] - synseg["mean"] for m in METHODS if m.removes and m.key in summary}
    if ablations:
        helpful = [t for t, d in ablations.items() if d < 0]
        if helpful:
            worst = min(helpful, key=lambda t: ablations[t])
            notes.append(f"- The largest drop comes from removing L_{worst} ({ablations[worst]:+.2f}); the paper's largest is L_sep."
                         + (" It is within the seed spread." if -ablations[worst] <= synseg["std"] + summary[f"no_{worst}"]["std"] else ""))
        notes.append(f"- Removing a term lowers mIoU for {len(helpful)} of {len(ablations)} terms "
                     f"({', '.join('L_' + t for t in helpful) or 'none'}); the paper reports a drop for all four.")
        within = [t for t, d in ablations.items() if abs(d) <= synseg["std"] + summary[f"no_{t}"]["std"]]
        if within and synseg["n"] > 1:
            notes.append(f"- Within the seed spread (not distinguishable at this scale): {', '.join('L_' + t for t in within)}.")
    return notes


class Benchmark:
    """Runs (or resumes) every step of the benchmark under ``out``."""

    def __init__(self, out: Path, scale: Scale, jobs: int = 2) -> None:
        self.out = out
        self.scale = scale
        self.jobs = jobs
        self._lock = threading.Lock()
        self.train_dir = out / "data" / "train"
        self.eval_dir = out / "data" / "eval"
        self.clip = out / "stage1" / "clip.safetensors"
        self.timings_path = out / "timings.json"
        self.timings: dict[str, float] = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}

    def _timed(self, name: str, start: float) -> None:
        with self._lock:  # stage-2 runs finish in parallel threads
            self.timings[name] = round(time.perf_counter() - start, 1)
            write_json(self.timings_path, self.timings)

    def data(self) -> None:
        for folder, count, seed in ((self.train_dir, self.scale.train_scenes, TRAIN_SEED), (self.eval_dir, self.scale.eval_scenes, EVAL_SEED)):
            marker = folder / "done.json"
            wanted = {"num": count, "seed": seed}
            if marker.is_file() and json.loads(marker.read_text()) == wanted:
                continue
            start = time.perf_counter()
            write_synthetic_dataset(folder, count, seed=seed, progress=False)
            write_json(marker, wanted)
            self._timed(f"data/{folder.name}", start)

    def stage1(self) -> dict[str, float]:
        stats_path = self.out / "stage1" / "stats.json"
        if self.clip.is_file() and stats_path.is_file():
            return json.loads(stats_path.read_text())
        start = time.perf_counter()
        log.info("stage 1: CLIP, %d steps", self.scale.stage1_steps)
        stats = train_clip(self.train_dir / "captions.jsonl", self.clip, steps=self.scale.stage1_steps,
                           batch_size=self.scale.stage1_batch, seed=0, progress=False)
        write_json(stats_path, stats)
        self._timed("stage1", start)
        return stats

    def stage2(self, method: Method, seed: int) -> Path:
        run_dir = self.out / "runs" / run_name(method, seed)
        model = run_dir / "model"
        if (model / CONFIG_NAME).is_file() and (model / WEIGHTS_NAME).is_file():
            return model
        start = time.perf_counter()
        resume = (run_dir / "config.yaml").is_file()
        command = stage2_command(method, seed, self.scale, self.clip, self.train_dir / "captions.jsonl", run_dir, resume)
        log.info("stage 2: %s seed %d%s", method.label, seed, " (resuming)" if resume else "")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        # One thread per run and `jobs` runs at a time: tiny models gain little from a second thread,
        # and oversubscribed OpenMP threads slow every process on a shared machine down.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        with (self.out / "runs" / f"{run_name(method, seed)}.log").open("a") as handle:
            completed = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"stage-2 training {run_name(method, seed)} failed (exit {completed.returncode}); see {handle.name}")
        self._timed(f"stage2/{run_name(method, seed)}", start)
        return model

    def evaluate(self, name: str, arguments: Sequence[str]) -> dict[str, Any]:
        out = self.out / "eval" / name
        results = out / "results.json"
        if not results.is_file():
            start = time.perf_counter()
            code = evaluate_main([*arguments, "--dataset", "folder", "--data-root", str(self.eval_dir), "--protocol", PROTOCOL,
                                  "--overlays", "6", "--out", str(out), "--quiet"])
            if code != 0:
                raise RuntimeError(f"evaluation {name} failed (exit {code})")
            self._timed(f"eval/{name}", start)
        return json.loads(results.read_text())

    def selectivity(self, name: str, model: Path, method: str) -> tuple[float, float]:
        path = self.out / "eval" / name / "selectivity.json"
        if path.is_file():
            inside, outside = json.loads(path.read_text())
            return inside, outside
        if method == "maskclip":
            segmenter = maskclip_segmenter(load_model(model))
        else:
            segmenter = Segmenter.from_checkpoint(model)
        dataset = get_dataset("folder", self.eval_dir)
        result = selectivity(SlidingWindow(segmenter, get_protocol(PROTOCOL)), dataset, SELECTIVITY_IMAGES)
        write_json(path, list(result))
        return result

    def run(self) -> Outcome:
        """Every step, skipping the finished ones."""
        self.data()
        stage1 = self.stage1()
        mious: dict[str, list[float]] = {m.key: [] for m in METHODS}
        accuracies: dict[str, list[float]] = {m.key: [] for m in METHODS}
        selectivities: dict[str, list[tuple[float, float]]] = {m.key: [] for m in METHODS}
        synseg_models: dict[str, Path] = {}
        runs = [(method, seed) for seed in self.scale.seeds for method in METHODS if method.trained]
        with ThreadPoolExecutor(self.jobs) as pool:
            models = list(pool.map(lambda run: self.stage2(*run), runs))
        # MaskCLIP reads the frozen stage-1 towers, which every stage-2 checkpoint holds unchanged.
        evaluations = [(run_name(m, seed), m.key, model, ["-c", str(model)]) for (m, seed), model in zip(runs, models, strict=True)]
        evaluations.append(("maskclip", "maskclip", models[0], ["-c", str(models[0]), "--method", "maskclip"]))
        for name, key, model, arguments in evaluations:
            results = self.evaluate(name, arguments)
            mious[key].append(results["miou"])
            accuracies[key].append(results["pixel_accuracy"])
            selectivities[key].append(self.selectivity(name, model, key))
            if key == "synseg":
                synseg_models[name] = model
        return Outcome(
            mious=mious,
            accuracy={k: statistics.fmean(v) for k, v in accuracies.items() if v},
            selectivity={k: (statistics.fmean(i for i, _ in v), statistics.fmean(o for _, o in v)) for k, v in selectivities.items() if v},
            synseg_models=synseg_models,
            stage1=stage1,
        )


def install_assets(model: Path, eval_dir: Path) -> tuple[Path, int]:
    """Copy the chosen model into synseg_core/assets/demo_model/ and a few held-out scenes into assets/samples/."""
    demo, samples = PACKAGE / "assets" / "demo_model", PACKAGE / "assets" / "samples"
    size = sum((model / name).stat().st_size for name in (CONFIG_NAME, WEIGHTS_NAME))
    if size > MAX_DEMO_BYTES:
        raise RuntimeError(f"{model}: {size / 2**20:.1f} MB exceeds the {MAX_DEMO_BYTES / 2**20:.0f} MB demo-model limit")
    demo.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_NAME, CONFIG_NAME):  # config last: segment.py takes config.json as "a demo model is here"
        shutil.copyfile(model / name, demo / f".{name}.tmp")
        os.replace(demo / f".{name}.tmp", demo / name)
    samples.mkdir(parents=True, exist_ok=True)
    for old in samples.glob("*.png"):
        old.unlink()
    for image in sorted((eval_dir / "images").glob("*.png"))[:NUM_SAMPLES]:
        shutil.copyfile(image, samples / f"scene_{image.stem}.png")
    return demo, size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cpu_benchmark",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Examples:\n"
            "  python -m benchmarks.cpu_benchmark                 # full run; writes docs/RESULTS.md and the demo model\n"
            "  python -m benchmarks.cpu_benchmark --quick --out /tmp/bench_quick   # smoke-sized, touches nothing in the repo\n"
            "  python -m benchmarks.cpu_benchmark                 # again after an interruption: resumes\n"
            f"Full scale: {asdict(FULL)}\nQuick scale: {asdict(QUICK)}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (default output bench_quick/, no docs or assets)")
    parser.add_argument("--out", type=Path, help="work folder, resumable (default: bench_out/ or bench_quick/)")
    parser.add_argument("--results", type=Path, help="Markdown table to write (default: docs/RESULTS.md for full runs, OUT/RESULTS.md for --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for stage 1 and evaluation (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="stage-2 runs trained at once, one thread each (default: %(default)s)")
    parser.add_argument("--assets", action=argparse.BooleanOptionalAction, default=None,
                        help="install the best SynSeg seed as the demo model + sample scenes (default: on for full runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    scale = QUICK if args.quick else FULL
    out = args.out or REPO / ("bench_quick" if args.quick else "bench_out")
    results_path = args.results or (out / "RESULTS.md" if args.quick else REPO / "docs" / "RESULTS.md")
    assets = (not args.quick) if args.assets is None else args.assets
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    benchmark = Benchmark(out, scale, jobs=args.jobs)
    try:
        outcome = benchmark.run()
    except (RuntimeError, OSError, ValueError) as exc:
        log.error("%s", exc)
        log.error("fix the cause and run the same command again: finished steps are kept in %s", out)
        return 1
    summary = summarise(outcome.mious)
    invocations_path = out / "invocations.json"
    invocations = json.loads(invocations_path.read_text()) if invocations_path.is_file() else []
    invocations.append({"started": started, "minutes": round((time.perf_counter() - start) / 60, 2),
                        "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2)})
    write_json(invocations_path, invocations)
    context = {
        "command": "python -m benchmarks.cpu_benchmark" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_minutes": sum(i["minutes"] for i in invocations),
        "invocations": invocations,
        "cpus": os.cpu_count(),
        "scale": asdict(scale),
        "stage1": outcome.stage1,
        "protocol": get_protocol(PROTOCOL).describe(),
        "reading": reading(summary),
        "notes": NOTES.read_text() if NOTES.is_file() and not args.quick else "",
    }
    best = max(outcome.synseg_models, key=lambda name: outcome.mious["synseg"][list(outcome.synseg_models).index(name)])
    if assets:
        demo, size = install_assets(outcome.synseg_models[best], benchmark.eval_dir)
        context["reading"].append(f"- Demo model: {best} (the best SynSeg seed), {size / 2**20:.1f} MB, installed in "
                                  f"`synseg_core/assets/{demo.name}/`.")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    write_text(results_path, results_markdown(summary, outcome, context))
    write_json(out / "summary.json", {"summary": summary, "per_seed": outcome.mious, "pixel_accuracy": outcome.accuracy,
                                      "selectivity": outcome.selectivity, **context})
    log.info("wrote %s (%.1f min)", results_path, context["wall_minutes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
