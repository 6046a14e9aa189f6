"""Latency of the deployment backends, CPU or GPU: ``python benchmarks/latency.py [--device cuda]``.

One run measures, with medians over repeats:

* per backend x input size x vocabulary size K: network latency (normalised pixels + text embeddings in,
  logits out, host arrays on both ends), frames/s, and peak memory;
* the bare image-encoder forward, for the ratio full model / encoder (the decoder must be cheap);
* the time to apply a new 20-word vocabulary, with a cold and a warm text cache (PyTorch and ONNX text towers;
  the ONNX one also untrimmed, every prompt at the full context length, as before token trimming);
* end to end per frame: ``Segmenter.segment`` of a 640x480 camera frame (pre-processing, network,
  post-processing on the backend's device, labels out) next to the network alone (``Backend.infer``) at the
  same K, and the bytes copied from the device per frame (labels + confidence, against K logits before);
* label agreement of the int8 / FP16 variants with FP32 on the same frame;

Every backend is the product's (``synseg_core.runtime``): the torch rows are ``TorchBackend`` with its options
(FP16, CUDA graphs, ``torch.compile``), exactly what ``segment``, ``evaluate`` and the ROS node run.

and writes the ratios the deployment targets are stated in (docs/PERFORMANCE.md) as JSON and Markdown.
The model is random-init unless ``--checkpoint`` is given: latency depends on shapes, not on weights.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from synseg_core.checkpoint import load_model
from synseg_core.export import convert_export, export_onnx, parse_size, weights_sha256
from synseg_core.model.synseg import SynSeg, create_model
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.export_format import ExportError, check_export, read_export
from synseg_core.runtime.onnx_backend import OnnxBackend
from synseg_core.runtime.processing import apply_threshold, preprocess
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.runtime.torch_backend import TorchBackend, postprocess_logits, torch_text_embedder

log = logging.getLogger("synseg.benchmark")

CPU_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
GPU_BACKENDS = ("torch", "torch-fp16", "torch-fp16-graphs", "onnxruntime", "tensorrt")
#: torch benchmark rows -> TorchBackend options (precision, cuda_graphs)
TORCH_VARIANTS = {
    "torch": ("fp32", False),
    "torch-graphs": ("fp32", True),
    "torch-fp16": ("fp16", False),
    "torch-fp16-graphs": ("fp16", True),
}
SECTIONS = ("grid", "vocabulary", "end_to_end")
VOCABULARY = (
    "door", "chair", "table", "window", "floor", "wall", "person", "plant", "lamp", "shelf",
    "box", "cable", "robot", "forklift", "pallet", "ladder", "bucket", "helmet", "bicycle", "monitor",
)
VOCABULARY_CLASSES = 20  # the K of the encoder ratio, the vocabulary-change timing and the end-to-end run
CAMERA = (480, 640)


@dataclass
class Row:
    backend: str
    device: str
    precision: str
    size: str  # "HxW"
    classes: int
    latency_ms: float  # median over repeats
    fps: float  # images per second: batch / latency
    batch: int
    peak_memory_mb: float | None  # CPU: RSS growth over "backend loaded" (fresh process); GPU: torch's peak (None: unknown)
    encoder_ms: float | None  # the bare image-encoder forward at this size


def interleaved_medians(
    jobs: dict[Any, Callable[[], object]], warmup: int, repeats: int, sync: Callable[[], None],
    record: dict[Any, list[Any]] | None = None,
) -> dict[Any, float]:
    """Median ms per job. The jobs run round-robin, so a load change on a shared machine hits all of them alike
    and the ratios between them stay meaningful. ``record`` collects each timed run's return value per job."""
    for job in jobs.values():
        for _ in range(warmup):
            job()
    sync()
    times: dict[Any, list[float]] = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            start = time.perf_counter()
            value = job()
            sync()
            times[key].append(time.perf_counter() - start)
            if record is not None:
                record.setdefault(key, []).append(value)
    return {key: 1000 * statistics.median(values) for key, values in times.items()}


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb(run: Callable[[], object]) -> float:
    """The process's peak RSS while ``run`` runs, sampled every millisecond."""
    peak = _rss_mb()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    run()
    done.set()
    thread.join()
    return max(peak, _rss_mb())


def ensure_export(model: SynSeg, work_dir: Path, size: tuple[int, int], precision: str, exporter: str, text: bool) -> Path:
    """A current export of ``model`` for ``size`` and ``precision`` under ``work_dir`` (reused across runs)."""
    fp32 = work_dir / f"{size[0]}x{size[1]}_fp32"
    weights = weights_sha256(model)
    try:
        check_export(read_export(fp32), fp32, weights_sha256=weights, input_size=size)
        if text and read_export(fp32, verify=False).text is None:
            raise ExportError("no text tower")
    except ExportError:
        log.info("exporting %dx%d (one-time, cached in %s)", *size, work_dir)
        export_onnx(model, fp32, input_size=size, exporter=exporter, text_encoder=text)
    if precision == "fp32":
        return fp32
    variant = work_dir / f"{size[0]}x{size[1]}_{precision}"
    try:
        meta = read_export(variant)
        check_export(meta, variant, weights_sha256=weights, input_size=size, precision=precision)
        if meta.files.get("decoder") is None:
            raise ExportError("incomplete")
    except ExportError:
        convert_export(fp32, variant, precision)
    return variant


def make_backend(name: str, model: SynSeg, size: tuple[int, int], args: argparse.Namespace) -> Backend:
    text = args.onnx_text and size == args.sizes[0]
    if name in TORCH_VARIANTS:
        precision, graphs = TORCH_VARIANTS[name]
        return TorchBackend(model, device=args.device, precision=precision, cuda_graphs=graphs, compile=args.compile)
    if name == "onnxruntime":
        return OnnxBackend(ensure_export(model, args.work_dir, size, "fp32", args.exporter, text), device=args.device, threads=args.threads)
    if name == "onnxruntime-int8":
        return OnnxBackend(ensure_export(model, args.work_dir, size, "int8", args.exporter, text), device="cpu", threads=args.threads)
    if name == "tensorrt":
        from synseg_core.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(
            ensure_export(model, args.work_dir, size, "fp16", args.exporter, text), device=args.device,
            max_batch=args.batch, max_classes=max(args.classes), opt_classes=VOCABULARY_CLASSES,
        )
    raise ValueError(f"unknown backend {name!r}")


def _encoder(backend: Backend, model: SynSeg) -> Callable[[np.ndarray], object]:
    """The bare image-encoder forward of ``backend`` (activations stay where the backend keeps them)."""
    if isinstance(backend, TorchBackend):
        def encode(pixels: np.ndarray) -> object:
            with torch.inference_mode():
                return model.encode_image(torch.from_numpy(pixels).to(backend.device))

        return encode
    return backend.encode_image  # type: ignore[attr-defined]


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def camera_frame() -> np.ndarray:
    """A 640x480 synthetic scene (shapes on textured backgrounds), so the benchmark needs no data."""
    from synseg_core.data.synthetic import generate_scene

    scene = generate_scene(0, size=240)
    return cv2.resize(scene.image, (CAMERA[1], CAMERA[0]), interpolation=cv2.INTER_LINEAR)


def _inputs(model: SynSeg, size: tuple[int, int], args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """The camera frame as a batch of ``args.batch`` pixels [B, 3, H, W] and K_max random unit text embeddings."""
    pixels = np.repeat(preprocess(camera_frame(), size, model.config.mean, model.config.std), args.batch, axis=0)
    text = np.random.default_rng(0).standard_normal((max(args.classes), model.text_dim)).astype(np.float32)
    return pixels, text / np.linalg.norm(text, axis=1, keepdims=True)


def measure_grid(model: SynSeg, args: argparse.Namespace) -> tuple[list[Row], dict[str, np.ndarray]]:
    """Every backend x size x K (and the bare encoder); also the K=20 logits at the first size, per backend.

    One backend is alive at a time (at 448 px and K = 100 one backend's working set is gigabytes); its encoder
    and K runs are interleaved, so the encoder and K ratios of a backend see the same machine load.
    """
    rows = []
    agreement: dict[str, np.ndarray] = {}
    sync = _sync(args.device)
    for size in args.sizes:
        pixels, text = _inputs(model, size, args)
        single = pixels[:1]
        for name in args.backends:
            backend = make_backend(name, model, size, args)
            jobs: dict[str | int, Callable[[], object]] = {"encoder": partial(_encoder(backend, model), single)}
            for classes in args.classes:
                jobs[classes] = partial(backend.infer, single, text[:classes])
            if args.batch > 1:
                jobs["batch"] = partial(backend.infer, pixels, text[:VOCABULARY_CLASSES])
            log.info("timing %s at %dx%d, K=%s", name, *size, args.classes)
            times = interleaved_medians(jobs, args.warmup, args.repeats, sync)
            memory = _cuda_memory(backend, jobs, args) if args.memory and args.device.startswith("cuda") else {}
            if size == args.sizes[0] and VOCABULARY_CLASSES <= max(args.classes):
                agreement[name] = backend.infer(single, text[:VOCABULARY_CLASSES])
            backend.close()
            if args.memory and not args.device.startswith("cuda"):
                memory = _memory_in_subprocess(name, size, args)
            for classes in args.classes:
                batched = args.batch > 1 and classes == VOCABULARY_CLASSES
                fps = args.batch * 1000 / times["batch"] if batched else 1000 / times[classes]
                rows.append(Row(
                    backend=name, device=args.device, precision=backend.precision, size=f"{size[0]}x{size[1]}",
                    classes=classes, latency_ms=round(times[classes], 2), fps=round(fps, 2),
                    batch=args.batch if batched else 1, peak_memory_mb=_round(memory.get(classes)),
                    encoder_ms=round(times["encoder"], 2),
                ))
                log.info("  %s K=%d: %.1f ms (encoder %.1f ms)", name, classes, times[classes], times["encoder"])
    return rows, agreement


def _cuda_memory(backend: Backend, jobs: dict[str | int, Callable[[], object]], args: argparse.Namespace) -> dict[int, float]:
    """PyTorch's peak CUDA allocation per K (onnxruntime and TensorRT allocate outside its accounting)."""
    if not isinstance(backend, TorchBackend):
        return {}
    peaks = {}
    for classes in args.classes:
        torch.cuda.reset_peak_memory_stats()
        jobs[classes]()
        torch.cuda.synchronize()
        peaks[classes] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def _memory_in_subprocess(name: str, size: tuple[int, int], args: argparse.Namespace) -> dict[int, float]:
    """CPU memory of one backend, measured in a fresh process so no other backend's freed memory is reused."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--memory-probe", name, "--sizes", f"{size[0]}x{size[1]}",
        "--classes", ",".join(str(k) for k in args.classes), "--threads", str(args.threads), "--exporter", args.exporter,
        "--work-dir", str(args.work_dir), "--preset", args.preset, *(f"--set={item}" for item in args.set),
    ]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log.warning("memory probe of %s failed: %s", name, result.stderr.strip().splitlines()[-1:])
        return {}
    return {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def memory_probe(model: SynSeg, args: argparse.Namespace) -> dict[int, float]:
    """RSS growth above 'backend loaded' while it runs K ascending: the working memory of each vocabulary size."""
    size = args.sizes[0]
    pixels, text = _inputs(model, size, args)
    backend = make_backend(args.memory_probe, model, size, args)
    base = peak = _rss_mb()
    growth = {}
    for classes in args.classes:
        peak = max(peak, peak_rss_mb(partial(backend.infer, pixels[:1], text[:classes])))
        growth[classes] = peak - base
    return growth


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def label_agreement(agreement: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of pixels whose label (argmax, threshold 0.5) equals the FP32 reference's, per other backend."""
    reference_name = "torch" if "torch" in agreement else "onnxruntime"
    if reference_name not in agreement:
        return {}

    def labels(logits: np.ndarray) -> np.ndarray:
        found, confidence, _ = postprocess_logits(torch.from_numpy(logits), logits.shape[-2:])
        return np.where(confidence[0].numpy() < 0.5, -1, found[0].numpy())

    reference = labels(agreement[reference_name])
    return {
        f"{name} vs {reference_name}": round(float((labels(logits) == reference).mean()), 5)
        for name, logits in agreement.items() if name != reference_name
    }


def vocabulary_timing(model: SynSeg, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """ms to embed a new 20-word vocabulary: cold (cache cleared) and warm, per text tower."""
    words = list(VOCABULARY[:VOCABULARY_CLASSES])
    template_set = model.config.prompt_set
    embedders: dict[str, tuple[Callable[[Sequence[str], str], np.ndarray], Callable[[], None]]] = {}
    if args.torch_text:
        embedders[f"torch ({args.device})"] = (torch_text_embedder(model), model.text_encoder.cache.clear)
    export_dir = args.work_dir / f"{args.sizes[0][0]}x{args.sizes[0][1]}_fp32"
    if args.onnx_text and (export_dir / "text_encoder.onnx").is_file():
        from synseg_core.runtime.onnx_text import OnnxTextEmbedder

        onnx_embedder = OnnxTextEmbedder(export_dir, threads=args.threads)
        embedders["onnxruntime (cpu)"] = (onnx_embedder, onnx_embedder.clear)
        if onnx_embedder.trim_tokens:  # the same tower on every position of the context, as before trimming
            untrimmed = OnnxTextEmbedder(export_dir, threads=args.threads, trim_tokens=False)
            embedders["onnxruntime (cpu), untrimmed"] = (untrimmed, untrimmed.clear)
    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for name, (embed, clear) in embedders.items():
        jobs[name, "warm"] = partial(embed, words, template_set)
        jobs[name, "cold"] = partial(_cold, clear, jobs[name, "warm"])
    times = interleaved_medians(jobs, 1, args.repeats, _sync(args.device))
    prompts = len(words) * _templates(template_set)
    return {
        name: {"cold_ms": round(times[name, "cold"], 2), "warm_ms": round(times[name, "warm"], 3), "prompts": prompts}
        for name in embedders
    }


def _cold(clear: Callable[[], None], embed: Callable[[], object]) -> object:
    clear()
    return embed()


def _templates(template_set: str) -> int:
    from synseg_core.text.prompts import get_templates

    return len(get_templates(template_set))


def _words(count: int) -> list[str]:
    return list(VOCABULARY[:count]) + [f"object number {i}" for i in range(count - len(VOCABULARY))]


def end_to_end(model: SynSeg, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per backend and K: Segmenter.segment of a 640x480 frame (stage medians, ms) next to Backend.infer alone.

    At the largest square input size (or ``--e2e-size``). The vocabulary is encoded before timing (a warm
    cache, as on a robot between vocabulary changes). ``pre_post_share`` = 1 - network / end to end: the share
    of everything that is not the network (pre-processing, post-processing on the device, copies, threshold).
    """
    size = args.e2e_size or max((s for s in args.sizes if s[0] == s[1]), default=args.sizes[0])
    frame = camera_frame()
    results: dict[str, dict[str, float]] = {}
    for name in args.backends:
        backend = make_backend(name, model, size, args)
        segmenter = Segmenter(backend, torch_text_embedder(model), model.config, input_size=size, patch_size=model.patch_size)
        pixels = preprocess(frame, size, model.config.mean, model.config.std)
        jobs: dict[Any, Callable[[], object]] = {}
        for classes in args.e2e_classes:
            words = _words(classes)
            text = segmenter.encode_vocabulary(words)
            jobs["segment", classes] = partial(_segment, segmenter, frame, words)
            jobs["network", classes] = partial(backend.infer, pixels, text)
        if args.e2e_batch > 1:
            text = segmenter.encode_vocabulary(_words(VOCABULARY_CLASSES))
            jobs["batch", VOCABULARY_CLASSES] = partial(_segment_batch, segmenter, [frame] * args.e2e_batch, text)
            jobs["batch network", VOCABULARY_CLASSES] = partial(backend.infer, np.repeat(pixels, args.e2e_batch, axis=0), text)
        log.info("end to end: %s at %dx%d, K=%s", name, *size, list(args.e2e_classes))
        stages: dict[Any, list[dict[str, float]]] = {}
        times = interleaved_medians(jobs, args.warmup, args.e2e_repeats, _sync(args.device), record=stages)
        for classes in args.e2e_classes:
            total, network = times["segment", classes], times["network", classes]
            stage = {k: round(1000 * statistics.median(t[k] for t in stages["segment", classes]), 2) for k in stages["segment", classes][0]}
            results[f"{name} {size[0]}x{size[1]} K={classes}"] = {
                **stage, "total": round(total, 2), "network_alone": round(network, 2),
                "pre_post_share": round(1 - network / total, 3),
                "device_bytes_now": CAMERA[0] * CAMERA[1] * 8,  # labels int32 + confidence float32
                "device_bytes_before": 4 * classes * size[0] * size[1],  # K float32 logits at the network size
            }
        if args.e2e_batch > 1:
            total, network = times["batch", VOCABULARY_CLASSES], times["batch network", VOCABULARY_CLASSES]
            results[f"{name} {size[0]}x{size[1]} K={VOCABULARY_CLASSES} batch {args.e2e_batch}"] = {
                "total": round(total, 2), "network_alone": round(network, 2), "pre_post_share": round(1 - network / total, 3),
                "frames_per_s": round(1000 * args.e2e_batch / total, 1),
                "device_bytes_now": args.e2e_batch * CAMERA[0] * CAMERA[1] * 8,
                "device_bytes_before": args.e2e_batch * 4 * VOCABULARY_CLASSES * size[0] * size[1],
            }
        backend.close()
    return results


def _segment_batch(segmenter: Segmenter, frames: list[np.ndarray], text: np.ndarray) -> np.ndarray:
    """Frames in, labels out for a batch: what Segmenter.segment does per frame, with one backend call."""
    config = segmenter.config
    pixels = np.concatenate([preprocess(f, segmenter.input_size, config.mean, config.std) for f in frames])
    prediction = segmenter.backend.predict(pixels, text, frames[0].shape[:2])
    return np.stack([apply_threshold(labels, confidence, segmenter.threshold) for labels, confidence in zip(prediction.labels, prediction.confidence, strict=True)])


def _segment(segmenter: Segmenter, frame: np.ndarray, words: list[str]) -> dict[str, float]:
    segmenter.segment(frame, words)
    return segmenter.timings


def ratios(rows: list[Row], device: str) -> dict[str, Any]:
    """The targets of docs/PERFORMANCE.md, computed from the rows of this run."""
    table = {(r.backend, r.size, r.classes): r for r in rows}
    classes = sorted({r.classes for r in rows})
    low, high = classes[0], classes[-1]
    mid = VOCABULARY_CLASSES if VOCABULARY_CLASSES in classes else high
    out: dict[str, Any] = {"full_over_encoder": {}, "k_high_over_k_low": {}, "onnxruntime_speedup_over_torch": {}}
    for (backend, size, k), row in table.items():
        label = f"{backend} {size}"
        if k == mid and row.encoder_ms:
            out["full_over_encoder"][label] = round(row.latency_ms / row.encoder_ms, 2)
        if k == high and (backend, size, low) in table:
            out["k_high_over_k_low"][label] = round(row.latency_ms / table[backend, size, low].latency_ms, 2)
        if backend == "onnxruntime" and ("torch", size, k) in table:
            out["onnxruntime_speedup_over_torch"][f"{size} K={k}"] = round(table["torch", size, k].latency_ms / row.latency_ms, 2)
    out["classes"] = {"encoder_ratio_at": mid, "k_ratio": f"{high}/{low}"}
    if device.startswith("cuda"):
        fp16 = [r for r in rows if r.backend == "torch-fp16-graphs" and r.size == "448x448" and r.classes == mid]
        out["torch_fp16_fps_448_k20"] = fp16[0].fps if fp16 else None
    return out


def weights_mb(model: SynSeg, args: argparse.Namespace) -> dict[str, float]:
    """Size of what each backend loads: PyTorch parameters (all towers), or the two ONNX graphs of the first size."""
    sizes = {"torch (fp32 parameters, incl. text tower)": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}
    first = args.sizes[0]
    for precision in ("fp32", "int8", "fp16"):
        folder = args.work_dir / f"{first[0]}x{first[1]}_{precision}"
        graphs = [folder / "image_encoder.onnx", folder / "decoder.onnx"]
        if all(g.is_file() for g in graphs):
            sizes[f"onnx {precision} (image encoder + decoder)"] = sum(g.stat().st_size for g in graphs) / 2**20
    return {name: round(mb, 1) for name, mb in sizes.items()}


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
        "device": args.device, "repeats": args.repeats, "warmup": args.warmup, "batch": args.batch,
        "model": str(args.checkpoint) if args.checkpoint else f"{args.preset} (random init, seed 0)" + "".join(f", {s}" for s in args.set),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return info


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"Model: {env['model']}; device {env['device']}; {env['threads']} threads; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}; median of {env['repeats']} runs after {env['warmup']} warm-up; {env['date']}.",
        "",
        "| backend | precision | input | K | latency ms | frames/s | working memory MB | encoder ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        memory = "n/a" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.0f}"
        fps = f"{row['fps']:.1f}" + (f" (batch {row['batch']})" if row["batch"] > 1 else "")
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['size']} | {row['classes']} | {row['latency_ms']:.1f} | "
            f"{fps} | {memory} | {row['encoder_ms']:.1f} |"
        )
    ratio = report["ratios"] or {"classes": {"encoder_ratio_at": "-", "k_ratio": "-"}, "full_over_encoder": {}, "k_high_over_k_low": {},
                                 "onnxruntime_speedup_over_torch": {}}
    lines += ["", f"Full model / bare image encoder at K = {ratio['classes']['encoder_ratio_at']} (target <= 1.25):", ""]
    lines += [f"- {k}: {v}" for k, v in ratio["full_over_encoder"].items()]
    lines += ["", f"K = {ratio['classes']['k_ratio']} latency ratio (target <= 1.5):", ""]
    lines += [f"- {k}: {v}" for k, v in ratio["k_high_over_k_low"].items()]
    if ratio["onnxruntime_speedup_over_torch"]:
        lines += ["", "ONNX Runtime speed-up over PyTorch eager (target >= 1.5):", ""]
        lines += [f"- {k}: {v}x" for k, v in ratio["onnxruntime_speedup_over_torch"].items()]
    if "torch_fp16_fps_448_k20" in ratio:
        lines += ["", f"PyTorch FP16 + CUDA graphs at 448x448, K = 20 (network): {ratio['torch_fp16_fps_448_k20']} frames/s (target >= 300)."]
    if report["vocabulary"]:
        lines += ["", "New 20-word vocabulary, cold = cache cleared (prompt ensemble of the model's template set):", ""]
    lines += [f"- {k}: cold {v['cold_ms']} ms ({v['prompts']} prompts), warm {v['warm_ms']} ms" for k, v in report["vocabulary"].items()]
    lines += [] if not report["end_to_end"] else [
        "", "End-to-end per frame: Segmenter.segment of a 640x480 frame (labels out) vs the network alone (ms, medians; "
        "pre + post = 1 - network / end to end; MB copied from the device per frame, now vs K logits before):", "",
        "| backend, input, K | end to end | network alone | pre + post | preprocess | infer + device post | threshold | MB now / before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, v in report["end_to_end"].items():
        stages = [str(v.get(stage, "-")) for stage in ("preprocess", "infer", "postprocess")]
        fps = f" ({v['frames_per_s']} frames/s)" if "frames_per_s" in v else ""
        lines.append(
            f"| {key} | {v['total']}{fps} | {v['network_alone']} | {100 * v['pre_post_share']:.1f} % | {' | '.join(stages)} | "
            f"{v['device_bytes_now'] / 1e6:.2f} / {v['device_bytes_before'] / 1e6:.2f} |"
        )
    lines += ["", "Weights loaded (MB): " + ", ".join(f"{k} {v}" for k, v in report["weights_mb"].items()) + "."]
    if report["label_agreement"]:
        lines += ["", "Label agreement with FP32 (same frame, K = 20, first input size):", ""]
        lines += [f"- {k}: {100 * v:.2f} %" for k, v in report["label_agreement"].items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/latency.py",
        description=__doc__.split("\n\n")[0] + " Results: JSON + Markdown (docs/PERFORMANCE.md quotes them).",
        epilog="Examples:\n"
        "  python benchmarks/latency.py                          # CPU: torch, onnxruntime, onnxruntime-int8\n"
        "  python benchmarks/latency.py --device cuda --batch 8  # GPU: torch, torch-fp16, torch-fp16-graphs, onnxruntime, tensorrt\n"
        "  python benchmarks/latency.py --sections end_to_end --e2e-classes 1,20,100 --sizes 448   # per-frame table only\n"
        "  python benchmarks/latency.py --checkpoint runs/synseg/model --sizes 448 --classes 20\n"
        "  python benchmarks/latency.py --preset tiny --sizes 64 --classes 1,20 --repeats 1   # a smoke run\n"
        "ONNX exports are cached in --work-dir and reused while the weights are unchanged.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="vit-b-16", help="random-init model preset (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead of --preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a --preset config field, e.g. decoder_ffn_dim=256")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: %(default)s)")
    parser.add_argument("--backends", help=f"comma-separated (default: {','.join(CPU_BACKENDS)} on cpu, {','.join(GPU_BACKENDS)} on cuda)")
    parser.add_argument("--sizes", default="224,448,480x640", help="input sizes N or HxW (default: %(default)s)")
    parser.add_argument("--classes", default="1,20,100", help="vocabulary sizes K (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the median is reported (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="images per call for the throughput column at K=20 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for torch and onnxruntime (default: all)")
    parser.add_argument("--compile", action="store_true", help="torch rows: run the model through torch.compile (TorchBackend(compile=True))")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="which parts to run, of %(default)s")
    parser.add_argument("--e2e-classes", default="20", help="K of the end-to-end section (default: %(default)s)")
    parser.add_argument("--e2e-size", help="input size of the end-to-end section (default: the largest square of --sizes)")
    parser.add_argument("--e2e-batch", type=int, default=1, help="also time frames in -> labels out for a batch of N frames at K=20 (default: %(default)s)")
    parser.add_argument("--e2e-repeats", type=int, help="timed runs of the end-to-end section (default: --repeats)")
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "legacy"), help="ONNX exporter (default: %(default)s)")
    parser.add_argument("--no-onnx-text", dest="onnx_text", action="store_false", help="skip the ONNX text tower timing")
    parser.add_argument("--no-torch-text", dest="torch_text", action="store_false", help="skip the PyTorch text tower timing")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory column (one process per backend on the CPU)")
    parser.add_argument("--work-dir", type=Path, default=Path("build/latency"), help="ONNX exports and engines (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("build/latency/results"), help="writes OUT.json and OUT.md (default: %(default)s)")
    parser.add_argument("--memory-probe", metavar="BACKEND", help=argparse.SUPPRESS)  # internal: one backend's CPU memory
    return parser


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with sizes as (H, W) tuples, K sorted ascending and the device's default backends."""
    args = build_parser().parse_args(argv)
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.classes = sorted(int(k) for k in args.classes.split(","))
    args.e2e_classes = sorted(int(k) for k in args.e2e_classes.split(","))
    args.e2e_size = parse_size(args.e2e_size) if args.e2e_size else None
    args.e2e_repeats = args.e2e_repeats or args.repeats
    args.sections = [s.strip() for s in args.sections.split(",")]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}; choose from {list(SECTIONS)}")
    default = GPU_BACKENDS if args.device.startswith("cuda") else CPU_BACKENDS
    args.backends = args.backends.split(",") if args.backends else list(default)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        log.error("--device %s: PyTorch sees no CUDA GPU", args.device)
        return 1
    if gpu and "tensorrt" in args.backends:
        from synseg_core.runtime.tensorrt_backend import tensorrt_available

        if not tensorrt_available():
            log.warning("TensorRT is not installed: skipping the tensorrt backend")
            args.backends.remove("tensorrt")
    torch.set_num_threads(args.threads)
    overrides = {key: _value(value) for key, _, value in (item.partition("=") for item in args.set)}
    model = load_model(args.checkpoint) if args.checkpoint else create_model(args.preset, seed=0, **overrides)
    model = model.to(args.device).eval()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.memory_probe:
        print(json.dumps(memory_probe(model, args)))
        return 0
    rows, agreement = measure_grid(model, args) if "grid" in args.sections else ([], {})
    if "vocabulary" in args.sections and args.onnx_text:  # the ONNX text tower lives in the first size's export
        ensure_export(model, args.work_dir, args.sizes[0], "fp32", args.exporter, True)
    report = {
        "environment": environment(args),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios(rows, args.device) if rows else {},
        "vocabulary": vocabulary_timing(model, args) if "vocabulary" in args.sections else {},
        "end_to_end": end_to_end(model, args) if "end_to_end" in args.sections else {},
        "label_agreement": label_agreement(agreement),
        "weights_mb": weights_mb(model, args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
