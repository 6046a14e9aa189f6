"""TensorRT engine cache: an engine is reused only for the exact graph, TensorRT version, GPU, precision and shapes.

An engine file carries its own key::

    MAGIC | 8-byte header length | header JSON (EngineKey + payload sha256) | serialized engine

so a stale, foreign, truncated or renamed engine is detected before TensorRT sees it, and (by default)
rebuilt. Files are named ``<graph>-<key digest>.engine`` and written atomically (temporary file + rename),
so concurrent builders and crashed builds never leave a half engine behind. Pure Python: the cache logic is
tested without TensorRT.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synseg_core.checkpoint import _atomic_write

log = logging.getLogger("synseg.runtime.tensorrt")

MAGIC = b"SYNSEG-TRT-ENGINE/1\n"
_LENGTH_BYTES = 8


class EngineError(ValueError):
    """An engine file is missing, corrupt, or was built for another graph, TensorRT version, GPU, precision or shapes."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any difference means 'build another engine'."""

    onnx_sha256: str
    tensorrt_version: str
    gpu: str  # device name and compute capability, e.g. "NVIDIA H200 (sm_90)"
    precision: str
    shapes: dict[str, list[list[int]]]  # input name -> [min, opt, max] shapes of the optimisation profile
    workspace_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """'field: stored -> wanted' for every field that differs from a stored key."""
        wanted = self.to_dict()
        return [f"{name}: {stored.get(name)!r} -> {value!r}" for name, value in wanted.items() if stored.get(name) != value]


def write_engine(path: Path, key: EngineKey, engine: bytes) -> None:
    """Atomically write ``engine`` with its key header."""
    header = json.dumps({"key": key.to_dict(), "payload_sha256": hashlib.sha256(engine).hexdigest()}).encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(MAGIC)
            handle.write(len(header).to_bytes(_LENGTH_BYTES, "little"))
            handle.write(header)
            handle.write(engine)

    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, write)


def read_engine(path: Path, expected: EngineKey) -> bytes:
    """The serialized engine in ``path``, if it was built for exactly ``expected``; EngineError otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EngineError(f"{path}: cannot read the engine ({exc})") from exc
    if not data.startswith(MAGIC):
        raise EngineError(f"{path}: not a SynSeg TensorRT engine (no header); rebuild it")
    start = len(MAGIC) + _LENGTH_BYTES
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    try:
        header = json.loads(data[start : start + length])
        stored, checksum = header["key"], header["payload_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{path}: corrupt engine header ({exc}); rebuild it") from exc
    engine = data[start + length :]
    if hashlib.sha256(engine).hexdigest() != checksum:
        raise EngineError(f"{path}: corrupt or truncated engine (checksum differs); rebuild it")
    differences = expected.differences(stored)
    if differences:
        raise EngineError(f"{path}: built for other settings ({'; '.join(differences)})")
    return engine


class EngineCache:
    """A folder of engines; ``load_or_build`` returns a matching engine, building it when there is none."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str, key: EngineKey) -> Path:
        return self.directory / f"{name}-{key.digest()}.engine"

    def load_or_build(
        self, name: str, key: EngineKey, build: Callable[[], bytes], allow_build: bool = True, force: bool = False
    ) -> bytes:
        """A serialized engine for ``key``: from the cache, else ``build()`` (logged, then stored atomically).

        A stale, foreign or corrupt file is rebuilt with a warning; with ``allow_build=False`` it raises
        EngineError instead (deployments that must never spend minutes building). ``force`` rebuilds always.
        """
        path = self.path(name, key)
        if path.exists() and not force:
            try:
                return read_engine(path, key)
            except EngineError as exc:
                if not allow_build:
                    raise
                log.warning("%s; rebuilding it", exc)
        elif not allow_build:
            raise EngineError(
                f"{path}: no engine for this GPU/TensorRT/shape combination and building is disabled; "
                "prebuild it with python -m synseg_core.runtime.tensorrt_backend EXPORT_DIR"
            )
        log.info("building TensorRT engine %s (%s, %s); this takes minutes", path.name, key.precision, key.gpu)
        start = time.monotonic()
        engine = build()
        write_engine(path, key, engine)
        log.info("built %s in %.0f s (%.1f MB)", path, time.monotonic() - start, len(engine) / 1e6)
        return engine
