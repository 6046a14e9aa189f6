"""Every command's --help answers without importing PyTorch (importing it alone takes seconds on a robot)."""
import subprocess
import sys

import pytest

CLIS = [
    "synseg_core.segment", "synseg_core.train", "synseg_core.evaluate", "synseg_core.export", "synseg_core.pretrained",
    "synseg_core.data.synthetic", "synseg_ros.bag",
]
PROBE = (
    "import runpy, sys\n"
    "sys.argv = [{cli!r}, '--help']\n"
    "try:\n    runpy.run_module({cli!r}, run_name='__main__')\nexcept SystemExit as stop:\n    assert stop.code in (0, None), stop.code\n"
    "print('heavy:', sorted(m for m in ('torch', 'open_clip', 'transformers', 'onnx') if m in sys.modules))\n"
)


@pytest.mark.parametrize("cli", CLIS)
def test_help_imports_no_heavy_library(cli):
    result = subprocess.run([sys.executable, "-c", PROBE.format(cli=cli)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy: []"


def test_importing_the_package_imports_no_torch():
    code = "import sys, synseg_core; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
