"""Latency of the deployment backends, CPU or GPU: ``python benchmarks/latency.py [--device cuda]``.

One run measures, with medians over repeats:

* per backend x input size x vocabulary size K: network latency (normalised pixels + text embeddings in,
  logits out, host arrays on both ends), frames/s, and peak memory;
* the bare image-encoder forward, for the ratio full model / encoder (the decoder must be cheap);
* the time to apply a new 20-word vocabulary, with a cold and a warm text cache (PyTorch and ONNX text towers);
* an end-to-end ``Segmenter.segment`` of a 640x480 camera frame (pre-processing, network, post-processing);
* label agreement of the int8 / FP16 variants with FP32 on the same frame;

and writes the ratios the deployment targets are stated in (docs/PERFORMANCE.md) as JSON and Markdown.
The model is random-init unless ``--checkpoint`` is given: latency depends on shapes, not on weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
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
from synseg_core.runtime.onnx_backend import ExportError, OnnxBackend, check_export, read_export
from synseg_core.runtime.processing import labels_from_maps, preprocess, sigmoid
from synseg_core.runtime.segmenter import Segmenter, torch_text_embedder
from synseg_core.runtime.torch_backend import TorchBackend

log = logging.getLogger("synseg.benchmark")

CPU_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")
GPU_BACKENDS = ("torch", "torch-fp16", "onnxruntime", "tensorrt")
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
    peak_memory_mb: float | None  # CPU: RSS growth during a run; GPU: torch's peak allocation (None where unknown)
    encoder_ms: float | None  # the bare image-encoder forward at this size


def median_ms(run: Callable[[], object], warmup: int, repeats: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_growth_mb(run: Callable[[], object]) -> float | None:
    """RSS growth while ``run`` runs, sampled every ms (approximate: allocators keep freed memory)."""
    if not Path("/proc/self/statm").exists():
        return None
    base = _rss_mb()
    peak = base
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
    return max(peak, _rss_mb()) - base


class CudaGraphBackend(Backend):
    """The PyTorch model in FP16 on a GPU, replayed as one CUDA graph per input shape (or torch.compile)."""

    name = "torch-fp16"
    precision = "fp16"

    def __init__(self, model: SynSeg, device: str, compile_model: bool = False) -> None:
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).half().to(self.device).eval()
        self.compiled = torch.compile(self.model, mode="max-autotune") if compile_model else None
        self.name = "torch-fp16-compile" if compile_model else "torch-fp16-graph"
        self._graphs: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, pixels_shape: tuple[int, ...], text_shape: tuple[int, ...]) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = torch.zeros(pixels_shape, device=self.device, dtype=torch.float16)
        text = torch.zeros(text_shape, device=self.device, dtype=torch.float16)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up outside the graph: cuBLAS handles, the positional-embedding cache
                self.model(pixels, text)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            logits = self.model(pixels, text)
        return graph, pixels, text, logits

    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(pixels).to(self.device).half()
        embeddings = torch.from_numpy(text).to(self.device).half()
        if self.compiled is not None:
            with torch.inference_mode():
                return self.compiled(images, embeddings).float().cpu().numpy()
        key = (tuple(images.shape), tuple(embeddings.shape))
        if key not in self._graphs:
            self._graphs[key] = self._capture(*key)
        graph, static_pixels, static_text, logits = self._graphs[key]
        static_pixels.copy_(images)
        static_text.copy_(embeddings)
        graph.replay()
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def encode_image(self, pixels: np.ndarray) -> object:
        return self.model.encode_image(torch.from_numpy(pixels).to(self.device).half())


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
    if name == "torch":
        return TorchBackend(model, device=args.device)
    if name == "torch-fp16":
        return CudaGraphBackend(model, args.device, compile_model=args.compile)
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


def _peak_memory(run: Callable[[], object], device: str, backend: Backend) -> float | None:
    if not device.startswith("cuda"):
        return peak_rss_growth_mb(run)
    if not isinstance(backend, (TorchBackend, CudaGraphBackend)):
        return None  # onnxruntime/TensorRT allocate outside PyTorch's accounting
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def camera_frame() -> np.ndarray:
    """A 640x480 synthetic scene (shapes on textured backgrounds), so the benchmark needs no data."""
    from synseg_core.data.synthetic import generate_scene

    scene = generate_scene(0, size=240)
    return cv2.resize(scene.image, (CAMERA[1], CAMERA[0]), interpolation=cv2.INTER_LINEAR)


def measure_grid(model: SynSeg, args: argparse.Namespace) -> tuple[list[Row], dict[str, dict[str, np.ndarray]]]:
    """Every backend x size x K; also returns logits at the first size for the agreement check."""
    rows = []
    generator = np.random.default_rng(0)
    text_all = generator.standard_normal((max(args.classes), model.text_dim)).astype(np.float32)
    text_all /= np.linalg.norm(text_all, axis=1, keepdims=True)
    frame = camera_frame()
    agreement: dict[str, dict[str, np.ndarray]] = {}
    sync = _sync(args.device)
    for size in args.sizes:
        pixels = np.repeat(preprocess(frame, size, model.config.mean, model.config.std), args.batch, axis=0)
        single = pixels[:1]
        for name in args.backends:
            log.info("%s at %dx%d", name, *size)
            backend = make_backend(name, model, size, args)
            encoder_ms = median_ms(partial(_encoder(backend, model), single), args.warmup, args.repeats, sync)
            for classes in args.classes:
                run = partial(backend.infer, single, text_all[:classes])
                latency = median_ms(run, args.warmup, args.repeats, sync)
                fps = 1000 / latency
                if args.batch > 1 and classes == VOCABULARY_CLASSES:
                    batched = partial(backend.infer, pixels, text_all[:classes])
                    fps = args.batch * 1000 / median_ms(batched, args.warmup, args.repeats, sync)
                rows.append(Row(
                    backend=name, device=args.device, precision=backend.precision, size=f"{size[0]}x{size[1]}", classes=classes,
                    latency_ms=round(latency, 2), fps=round(fps, 2), batch=args.batch if classes == VOCABULARY_CLASSES else 1,
                    peak_memory_mb=_round(_peak_memory(run, args.device, backend)), encoder_ms=round(encoder_ms, 2),
                ))
                log.info("  K=%d: %.1f ms (encoder %.1f ms)", classes, latency, encoder_ms)
            if size == args.sizes[0] and VOCABULARY_CLASSES <= max(args.classes):
                agreement[name] = {"logits": backend.infer(single, text_all[:VOCABULARY_CLASSES])}
            backend.close()
    return rows, agreement


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def label_agreement(agreement: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Share of pixels whose label (argmax, threshold 0.5) equals the FP32 reference's, per other backend."""
    reference_name = "torch" if "torch" in agreement else "onnxruntime"
    if reference_name not in agreement:
        return {}

    def labels(logits: np.ndarray) -> np.ndarray:
        return labels_from_maps(sigmoid(logits[0]), 0.5)[0]

    reference = labels(agreement[reference_name]["logits"])
    return {
        f"{name} vs {reference_name}": round(float((labels(values["logits"]) == reference).mean()), 5)
        for name, values in agreement.items() if name != reference_name
    }


def vocabulary_timing(model: SynSeg, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """ms to embed a new 20-word vocabulary: cold (cache cleared) and warm, per text tower."""
    words = list(VOCABULARY[:VOCABULARY_CLASSES])
    template_set = model.config.prompt_set
    results = {}
    embedders: dict[str, tuple[Callable[[Sequence[str], str], np.ndarray], Callable[[], None]]] = {
        f"torch ({args.device})": (torch_text_embedder(model), model.text_encoder.cache.clear),
    }
    export_dir = args.work_dir / f"{args.sizes[0][0]}x{args.sizes[0][1]}_fp32"
    if args.onnx_text and (export_dir / "text_encoder.onnx").is_file():
        from synseg_core.runtime.onnx_text import OnnxTextEmbedder

        onnx_embedder = OnnxTextEmbedder(export_dir, threads=args.threads)
        embedders["onnxruntime (cpu)"] = (onnx_embedder, onnx_embedder.clear)
    sync = _sync(args.device)
    for name, (embed, clear) in embedders.items():
        warm = partial(embed, words, template_set)
        results[name] = {
            "cold_ms": round(median_ms(partial(_cold, clear, warm), 1, args.repeats, sync), 2),
            "warm_ms": round(median_ms(warm, 1, args.repeats, sync), 3),
            "prompts": len(words) * _templates(template_set),
        }
    return results


def _cold(clear: Callable[[], None], embed: Callable[[], np.ndarray]) -> np.ndarray:
    clear()
    return embed()


def _templates(template_set: str) -> int:
    from synseg_core.text.prompts import get_templates

    return len(get_templates(template_set))


def end_to_end(model: SynSeg, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Segmenter.segment of a 640x480 frame at the largest square input size, K = 20: stage medians in ms."""
    size = max((s for s in args.sizes if s[0] == s[1]), default=args.sizes[0])
    frame = camera_frame()
    words = list(VOCABULARY[:VOCABULARY_CLASSES])
    results = {}
    for name in args.backends:
        segmenter = Segmenter(make_backend(name, model, size, args), torch_text_embedder(model), model.config, input_size=size)
        stages: dict[str, list[float]] = {}
        for index in range(args.warmup + args.repeats):
            start = time.perf_counter()
            segmenter.segment(frame, words)
            total = time.perf_counter() - start
            if index >= args.warmup:
                for stage, seconds in {**segmenter.timings, "total": total}.items():
                    stages.setdefault(stage, []).append(seconds)
        results[f"{name} {size[0]}x{size[1]}"] = {stage: round(1000 * statistics.median(v), 2) for stage, v in stages.items()}
        segmenter.backend.close()
    return results


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
        fp16 = [r for r in rows if r.backend == "torch-fp16" and r.size == "448x448" and r.classes == mid]
        out["torch_fp16_fps_448_k20"] = fp16[0].fps if fp16 else None
    return out


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
        "| backend | precision | input | K | latency ms | frames/s | peak memory MB | encoder ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        memory = "n/a" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.0f}"
        fps = f"{row['fps']:.1f}" + (f" (batch {row['batch']})" if row["batch"] > 1 else "")
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['size']} | {row['classes']} | {row['latency_ms']:.1f} | "
            f"{fps} | {memory} | {row['encoder_ms']:.1f} |"
        )
    ratio = report["ratios"]
    lines += ["", f"Full model / bare image encoder at K = {ratio['classes']['encoder_ratio_at']} (target <= 1.25):", ""]
    lines += [f"- {k}: {v}" for k, v in ratio["full_over_encoder"].items()]
    lines += ["", f"K = {ratio['classes']['k_ratio']} latency ratio (target <= 1.5):", ""]
    lines += [f"- {k}: {v}" for k, v in ratio["k_high_over_k_low"].items()]
    if ratio["onnxruntime_speedup_over_torch"]:
        lines += ["", "ONNX Runtime speed-up over PyTorch eager (target >= 1.5):", ""]
        lines += [f"- {k}: {v}x" for k, v in ratio["onnxruntime_speedup_over_torch"].items()]
    if "torch_fp16_fps_448_k20" in ratio:
        lines += ["", f"PyTorch FP16 (CUDA) at 448x448, K = 20: {ratio['torch_fp16_fps_448_k20']} frames/s (target >= 300)."]
    lines += ["", "New 20-word vocabulary (prompt ensemble of the model's template set):", ""]
    lines += [f"- {k}: cold {v['cold_ms']} ms ({v['prompts']} prompts), warm {v['warm_ms']} ms" for k, v in report["vocabulary"].items()]
    lines += ["", "End-to-end Segmenter.segment of a 640x480 frame, K = 20 (ms, medians):", ""]
    lines += [f"- {k}: " + ", ".join(f"{stage} {ms}" for stage, ms in v.items()) for k, v in report["end_to_end"].items()]
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
        "  python benchmarks/latency.py --device cuda --batch 8  # GPU: torch, torch-fp16 (CUDA graphs), onnxruntime, tensorrt\n"
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
    parser.add_argument("--compile", action="store_true", help="torch-fp16: torch.compile instead of CUDA graphs")
    parser.add_argument("--exporter", default="dynamo", choices=("dynamo", "legacy"), help="ONNX exporter (default: %(default)s)")
    parser.add_argument("--no-onnx-text", dest="onnx_text", action="store_false", help="skip the ONNX text tower timing")
    parser.add_argument("--work-dir", type=Path, default=Path("build/latency"), help="ONNX exports and engines (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("build/latency/results"), help="writes OUT.json and OUT.md (default: %(default)s)")
    return parser


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    args.classes = sorted(int(k) for k in args.classes.split(","))
    gpu = args.device.startswith("cuda")
    args.backends = args.backends.split(",") if args.backends else list(GPU_BACKENDS if gpu else CPU_BACKENDS)
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
    rows, agreement = measure_grid(model, args)
    report = {
        "environment": environment(args),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios(rows, args.device),
        "vocabulary": vocabulary_timing(model, args),
        "end_to_end": end_to_end(model, args),
        "label_agreement": label_agreement(agreement),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
