"""The runtime's layering: backends are leaves under the factory, no import circles, no torch where not needed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "synseg_core" / "runtime"
BACKENDS = ("torch_backend", "onnx_backend", "tensorrt_backend")
TORCH_FREE = ("backend", "processing", "export_format", "engine_cache", "onnx_backend", "onnx_text", "tensorrt_backend", "factory", "segmenter")
# A finder that makes `import torch` fail, as in an install without torch.
BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed")
sys.meta_path.insert(0, NoTorch())
"""


def module_imports(name: str, top_level_only: bool = False) -> set[str]:
    """synseg_core modules that runtime/<name>.py imports (at module level only, if asked)."""
    tree = ast.parse((RUNTIME / f"{name}.py").read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_backend_never_imports_the_factory_the_segmenter_or_the_exporter(backend):
    imported = module_imports(backend)
    assert not imported & {"synseg_core.runtime.factory", "synseg_core.runtime.segmenter", "synseg_core.export"}
    assert not imported & {f"synseg_core.runtime.{other}" for other in BACKENDS if other != backend}


def test_the_export_format_needs_only_numpy_and_the_standard_library():
    assert {m for m in module_imports("export_format") if not m.startswith("__")} <= {"hashlib", "json", "collections.abc", "dataclasses", "pathlib", "typing"}


@pytest.mark.parametrize("name", [n for n in TORCH_FREE])
def test_no_torch_at_module_level(name):
    assert not {m for m in module_imports(name, top_level_only=True) if m == "torch" or m.startswith("torch.")}


def test_only_the_factory_may_import_the_exporter_and_only_when_it_must_export():
    for name in TORCH_FREE:
        assert "synseg_core.export" not in module_imports(name, top_level_only=True)


def _runs_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, cwd=RUNTIME.parents[1])


@pytest.mark.skipif(
    _runs_without_torch("import synseg_core.checkpoint").returncode != 0,
    reason="synseg_core's package __init__ / checkpoint.py still import torch (made torch-free on the 'lean' branch)",
)
@pytest.mark.parametrize("name", TORCH_FREE)
def test_runtime_modules_import_without_torch(name):
    result = _runs_without_torch(f"import synseg_core.runtime.{name}")
    assert result.returncode == 0, result.stderr
