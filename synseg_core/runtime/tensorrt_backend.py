"""TensorRT backend: engines built from an export folder's ONNX graphs, cached per graph/TensorRT/GPU/shapes.

Three engines, as the export has three graphs: the image encoder (one optimisation profile over the batch),
FiLM + decoder (a profile over the batch and over K, the vocabulary size, e.g. min 1 / opt 20 / max 256), and
the post-processing (upsampling, argmax, best score; a profile over batch, K and the output size, which is a
shape input). Logits never leave the GPU: ``predict`` copies labels and confidence only.
Changing the vocabulary never rebuilds anything; longer vocabularies are decoded in chunks of the profile's
maximum. Networks are built strongly typed from the export as it is: an fp16 export gives an FP16 engine
(TensorRT 10.12 deprecated the FP16 builder flag in favour of typed graphs), with float32 inputs/outputs.

Prebuild the engines where they will run (a build takes minutes and is specific to the GPU and TensorRT
version)::

    python -m synseg_core.runtime.tensorrt_backend deploy/synseg-448-fp16 --max-classes 256

``tensorrt`` is imported lazily: this module imports without it, and the backend explains what is missing.
GPU memory and the CUDA stream come from PyTorch, imported when a backend is built (TensorRT's Python API
has no allocator of its own; a torch-free variant would use cuda-python's ``cuda.bindings.runtime``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synseg_core.runtime.backend import (
    Backend,
    Prediction,
    check_inputs,
    check_logits,
    check_prediction,
    check_size,
    predict_chunked,
    run_chunked,
)
from synseg_core.runtime.engine_cache import EngineCache, EngineError, EngineKey
from synseg_core.runtime.export_format import (
    CLASS_MAPS,
    CONFIDENCE,
    DECODER,
    FILE_NAMES,
    IMAGE_ENCODER,
    LABELS,
    LOGITS,
    MAP_CLASSES,
    PIXELS,
    POSTPROCESS,
    SIZE,
    TEXT,
    ExportError,
    ExportMetadata,
    read_export,
)

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

log = logging.getLogger("synseg.runtime.tensorrt")

DEFAULT_WORKSPACE_GIB = 4.0
DEFAULT_OPT_CLASSES = 20
#: the post-processing engine's output-size range (H and W each) and the size it is tuned for (a VGA camera)
MAX_OUTPUT_SIDE = 4096
OPT_OUTPUT_SIZE = (480, 640)
HEARTBEAT_S = 30.0
#: a profile's [min, opt, max] shapes per input name
Profile = dict[str, list[list[int]]]


def require_tensorrt() -> str:
    """TensorRT's version, or an ImportError that says what to install."""
    message = (
        "the tensorrt backend needs NVIDIA TensorRT 10 for Python (pip install tensorrt on a machine with an "
        "NVIDIA GPU and driver); use backend='onnxruntime' where TensorRT is not available"
    )
    try:
        import tensorrt
    except ImportError as exc:
        raise ImportError(message) from exc
    # Installed type stubs alone make `tensorrt` an empty namespace package.
    if not hasattr(tensorrt, "Builder"):
        raise ImportError(message + " (only an empty `tensorrt` package, e.g. type stubs, is installed)")
    return str(tensorrt.__version__)


def tensorrt_available() -> bool:
    try:
        require_tensorrt()
    except ImportError:
        return False
    return True


def check_device(device: str) -> None:
    """A clear error, before any export or build, when ``device`` is not a CUDA device."""
    if not str(device).startswith("cuda"):
        raise ValueError(f"the tensorrt backend runs on a CUDA device, not {device!r}; pass device='cuda' (or 'cuda:N')")


def cuda_device(device: str) -> torch.device:
    """'cuda' or 'cuda:N' as a torch device with an index; clear errors for anything else or no GPU."""
    import torch

    check_device(device)
    chosen = torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError("the tensorrt backend needs a CUDA GPU, and PyTorch sees none")
    return chosen if chosen.index is not None else torch.device("cuda", torch.cuda.current_device())


def engine_profiles(meta: ExportMetadata, max_batch: int, opt_classes: int, max_classes: int) -> dict[str, Profile]:
    """Optimisation profiles of the three engines: graph role -> input name -> [min, opt, max] shape.

    SIZE and MAP_CLASSES of the post-processing engine are shape inputs: their entries hold [min, opt, max] *values*.
    """
    if not 1 <= opt_classes <= max_classes:
        raise ValueError(f"need 1 <= opt_classes <= max_classes, got {opt_classes} and {max_classes}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    height, width = meta.input_size
    tokens = 1 + meta.grid[0] * meta.grid[1]

    def batched(*shape: int) -> list[list[int]]:
        return [[1, *shape], [1, *shape], [max_batch, *shape]]

    decoder: Profile = {name: batched(tokens, meta.vision_width) for name in meta.activation_names}
    decoder[TEXT] = [[1, meta.text_dim], [opt_classes, meta.text_dim], [max_classes, meta.text_dim]]
    post: Profile = {
        LOGITS: [[1, 1, height, width], [1, opt_classes, height, width], [max_batch, max_classes, height, width]],
        SIZE: [[1, 1], list(OPT_OUTPUT_SIZE), [MAX_OUTPUT_SIDE, MAX_OUTPUT_SIDE]],
        MAP_CLASSES: [[0], [0], [max_classes]],  # a shape input too: 0, or K when class maps are asked for
    }
    return {IMAGE_ENCODER: {PIXELS: batched(3, height, width)}, DECODER: decoder, POSTPROCESS: post}


def gpu_identity(device: torch.device) -> str:
    """'NVIDIA H200 (sm_90)': what an engine is specific to besides the TensorRT version."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"


def _make_logger() -> trt.ILogger:
    import tensorrt as trt

    class _Logger(trt.ILogger):
        """TensorRT's messages into Python logging (its INFO is chatty: it goes to DEBUG)."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def _make_progress_monitor(label: str) -> trt.IProgressMonitor:
    import tensorrt as trt

    class _Progress(trt.IProgressMonitor):
        """One log line per top-level build phase, so a minutes-long build visibly advances."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            if not parent_phase:
                log.info("%s: %s (%d steps)", label, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            log.debug("%s: %s done", label, phase_name)

    return _Progress()


@contextmanager
def _heartbeat(label: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Log 'still building' lines while the block runs (TensorRT phases can be silent for minutes)."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("%s: still building (%.0f s)", label, time.monotonic() - start)

    thread = threading.Thread(target=beat, name="trt-build-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def build_engine(onnx_path: Path, profile: Profile, workspace_bytes: int) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine for ``profile``."""
    import tensorrt as trt

    logger = _make_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimization = builder.create_optimization_profile()
    shape_inputs = {network.get_input(i).name for i in range(network.num_inputs) if network.get_input(i).is_shape_tensor}
    for name, (low, opt, high) in profile.items():
        if name in shape_inputs:  # the values of a shape input (the output size), not its dimensions
            optimization.set_shape_input(name, low, opt, high)
        else:
            optimization.set_shape(name, trt.Dims(low), trt.Dims(opt), trt.Dims(high))
    config.add_optimization_profile(optimization)
    monitor = _make_progress_monitor(onnx_path.name)
    config.progress_monitor = monitor  # the monitor must outlive the build: keep the reference
    with _heartbeat(onnx_path.name):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT errors above; a larger workspace may help)")
    return bytes(memoryview(serialized))


class EngineRunner:
    """One engine + execution context: binds torch CUDA tensors by name and runs on a stream.

    Shape inputs (the post-processing engine's output size) live in host memory, as TensorRT requires.
    """

    def __init__(self, engine: trt.ICudaEngine, device: torch.device) -> None:
        import tensorrt as trt
        import torch

        dtypes = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool}
        self.engine = engine
        self.device = device
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.host_inputs = {n for n in self.inputs if engine.is_shape_inference_io(n)}
        self.dtypes = {n: dtypes[engine.get_tensor_dtype(n).name] for n in names}

    def run(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        """Input tensors (on ``device``; shape inputs on the host) -> output tensors (on ``device``), on ``stream``."""
        import torch

        bound = {}  # keeps converted inputs alive until the engine is enqueued (TensorRT holds raw addresses)
        for name in self.inputs:
            target = "cpu" if name in self.host_inputs else self.device
            tensor = inputs[name].to(target, self.dtypes[name]).contiguous()
            bound[name] = tensor
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise ValueError(f"input {name} of shape {tuple(tensor.shape)} is outside the engine's optimisation profile")
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            shape = [dims[i] for i in range(len(dims))]
            outputs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT errors above)")
        return outputs


class TensorRTBackend(Backend):
    """Runs an export folder's two graphs as TensorRT engines on one GPU.

    ``max_batch`` images and ``max_classes`` words per engine call (larger inputs are split);
    ``opt_classes`` is the vocabulary size TensorRT tunes for. Engines live in ``cache_dir``
    (default EXPORT/engines); ``allow_build=False`` refuses to build (a missing or stale engine is an error),
    ``rebuild=True`` builds even when a matching engine is cached.

    Not yet run on a machine with TensorRT (none of this project's machines has it); checked by mypy against
    the TensorRT 10 stubs.
    """

    name = "tensorrt"

    def __init__(
        self,
        directory: str | Path,
        device: str = "cuda",
        max_batch: int = 1,
        max_classes: int | None = None,
        opt_classes: int = DEFAULT_OPT_CLASSES,
        workspace_gib: float = DEFAULT_WORKSPACE_GIB,
        cache_dir: str | Path | None = None,
        allow_build: bool = True,
        rebuild: bool = False,
        verify: bool = True,
    ) -> None:
        version = require_tensorrt()
        import tensorrt as trt
        import torch

        self.device = cuda_device(device)
        self.directory = Path(directory)
        self.meta = read_export(self.directory, verify=verify)
        if self.meta.precision not in ("fp32", "fp16"):
            raise ExportError(f"{self.directory}: a {self.meta.precision} export is for ONNX Runtime; TensorRT builds fp32 or fp16 exports")
        self.precision = self.meta.precision
        self.input_size = self.meta.input_size
        self.max_batch = max_batch
        self.max_classes = max_classes or self.meta.max_classes
        profiles = engine_profiles(self.meta, max_batch, min(opt_classes, self.max_classes), self.max_classes)
        self.cache = EngineCache(cache_dir if cache_dir is not None else self.directory / "engines")
        gpu = gpu_identity(self.device)
        workspace = int(workspace_gib * (1 << 30))
        self._logger = _make_logger()
        self._runtime = trt.Runtime(self._logger)
        self.engine_paths: dict[str, Path] = {}
        runners = {}
        with torch.cuda.device(self.device):
            for role in (IMAGE_ENCODER, DECODER, POSTPROCESS):
                key = EngineKey(self.meta.files[role], version, gpu, self.precision, profiles[role], workspace)
                onnx_path = self.directory / FILE_NAMES[role]
                engine = self._load(role, key, onnx_path, profiles[role], workspace, allow_build, rebuild)
                runners[role] = EngineRunner(engine, self.device)
                self.engine_paths[role] = self.cache.path(role, key)
            self._stream = torch.cuda.Stream(self.device)
        self._image, self._decoder, self._post = runners[IMAGE_ENCODER], runners[DECODER], runners[POSTPROCESS]

    def _load(
        self, role: str, key: EngineKey, onnx_path: Path, profile: Profile, workspace: int, allow_build: bool, rebuild: bool
    ) -> trt.ICudaEngine:
        def build() -> bytes:
            return build_engine(onnx_path, profile, workspace)

        data = self.cache.load_or_build(role, key, build, allow_build=allow_build or rebuild, force=rebuild)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:  # e.g. a driver update behind an unchanged key
            if not allow_build:
                raise EngineError(f"{self.cache.path(role, key)}: TensorRT cannot deserialize it; rebuild it")
            log.warning("%s: TensorRT cannot deserialize it; rebuilding", self.cache.path(role, key))
            engine = self._runtime.deserialize_cuda_engine(self.cache.load_or_build(role, key, build, force=True))
            if engine is None:
                raise EngineError(f"{self.cache.path(role, key)}: a freshly built engine does not deserialize")
        return engine

    def encode_image(self, pixels: np.ndarray) -> dict[str, torch.Tensor]:
        """pixels [B, 3, H, W] -> activations on the GPU."""
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            images = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, non_blocking=True)
            return self._image.run({PIXELS: images}, self._stream)

    def _decode_on_device(self, activations: dict[str, torch.Tensor], text: np.ndarray) -> torch.Tensor:
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            embeddings = torch.from_numpy(np.ascontiguousarray(text)).to(self.device, non_blocking=True)
            return self._decoder.run({**activations, TEXT: embeddings}, self._stream)[LOGITS]

    def decode(self, activations: dict[str, torch.Tensor], text: np.ndarray) -> np.ndarray:
        """activations of ``encode_image`` + text [K, T] -> logits [B, K, H, W] on the host."""
        import torch

        logits = self._decode_on_device(activations, text)
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            return logits.float().cpu().numpy()  # a blocking copy on this stream: it waits for the engines before it

    def postprocess(self, logits: torch.Tensor, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        """logits on the GPU -> labels, confidence (and class maps) at ``size``, computed by the engine."""
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            map_classes = torch.tensor([logits.shape[1] if class_maps else 0], dtype=torch.int64)
            out = self._post.run({LOGITS: logits, SIZE: torch.tensor(size, dtype=torch.int64), MAP_CLASSES: map_classes}, self._stream)
            maps = out[CLASS_MAPS].cpu().numpy() if class_maps else None
            return Prediction(out[LABELS].cpu().numpy(), out[CONFIDENCE].float().cpu().numpy(), maps)

    def infer(self, pixels: np.ndarray, text: np.ndarray) -> np.ndarray:
        check_inputs(pixels, text, self.meta.input_size, self.meta.text_dim)
        logits = run_chunked(pixels, text, self.max_batch, self.max_classes, self.encode_image, self.decode)
        return check_logits(logits, self.name)

    def predict(self, pixels: np.ndarray, text: np.ndarray, size: tuple[int, int], class_maps: bool = False) -> Prediction:
        check_inputs(pixels, text, self.meta.input_size, self.meta.text_dim)
        size = check_size(size)
        if max(size) > MAX_OUTPUT_SIDE:
            raise ValueError(f"output size {size} exceeds the post-processing engine's {MAX_OUTPUT_SIDE} pixels per side")

        def decode(activations: dict[str, torch.Tensor], chunk: np.ndarray, maps: bool) -> Prediction:
            return self.postprocess(self._decode_on_device(activations, chunk), size, maps)

        prediction = predict_chunked(pixels, text, self.max_batch, self.max_classes, class_maps, self.encode_image, decode)
        return check_prediction(prediction, self.name)

    def close(self) -> None:
        import torch

        del self._image, self._decoder, self._post
        torch.cuda.empty_cache()


BACKEND = TensorRTBackend


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.runtime.tensorrt_backend",
        description="Prebuild the TensorRT engines of a SynSeg ONNX export on this GPU, so the first segmentation "
        "does not wait minutes. Engines are cached per ONNX graph, TensorRT version, GPU, precision and shapes; "
        "a stale or foreign engine is rebuilt.",
        epilog="Examples:\n"
        "  python -m synseg_core.export runs/synseg --input-size 448 --precision fp16 --out deploy/synseg-448-fp16\n"
        "  python -m synseg_core.runtime.tensorrt_backend deploy/synseg-448-fp16 --max-classes 256 --opt-classes 20\n"
        "Then: Segmenter.from_checkpoint('runs/synseg', backend='tensorrt', device='cuda', precision='fp16',\n"
        "input_size=448, onnx_dir='deploy/synseg-448-fp16', max_classes=256) finds the engines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("export_dir", type=Path, help="export folder written by python -m synseg_core.export")
    parser.add_argument("--device", default="cuda", help="CUDA device (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=1, help="images per engine call (default: %(default)s)")
    parser.add_argument("--max-classes", type=int, help="words per decoder call (default: the export's max_classes)")
    parser.add_argument("--opt-classes", type=int, default=DEFAULT_OPT_CLASSES, help="vocabulary size to tune for (default: %(default)s)")
    parser.add_argument("--workspace-gib", type=float, default=DEFAULT_WORKSPACE_GIB, help="builder workspace limit in GiB (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, help="engine folder (default: EXPORT_DIR/engines)")
    parser.add_argument("--rebuild", action="store_true", help="build even if matching engines are cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options: dict[str, Any] = {
        "device": args.device, "max_batch": args.max_batch, "max_classes": args.max_classes,
        "opt_classes": args.opt_classes, "workspace_gib": args.workspace_gib, "cache_dir": args.cache_dir, "rebuild": args.rebuild,
    }
    try:
        backend = TensorRTBackend(args.export_dir, **options)
    except (ImportError, ExportError, EngineError, ValueError, RuntimeError) as exc:
        log.error("cannot prebuild engines: %s", exc)
        return 1
    for role, path in backend.engine_paths.items():
        print(f"{role}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
