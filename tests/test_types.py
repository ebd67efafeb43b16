"""Types are checked: mypy over the package (strict for ``core``, ``binance`` and ``store``: pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_mypy_is_clean():
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
