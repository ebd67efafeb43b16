"""The report's charts are an extra (requirements-report.txt): without matplotlib, --html is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "  # as if it were not installed
                      "from volspike_funding.report.funding_report import main; sys.exit(main(sys.argv[1:]))")


def test_html_without_matplotlib_names_the_requirements_file(tmp_path: Path) -> None:
    log = tmp_path / "empty.log"
    log.write_text("")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, str(log), "--html", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": os.devnull})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "--html needs matplotlib" in proc.stderr and "requirements-report.txt" in proc.stderr


def test_running_needs_no_test_or_report_package() -> None:
    """scripts/run.sh installs requirements.txt only: the demo's fake exchange is in it, matplotlib and the test
    tools are not."""
    runtime = (ROOT / "requirements.txt").read_text()
    assert "websockets" in runtime and "matplotlib" not in runtime and "pytest" not in runtime
    assert "requirements-dev" not in (ROOT / "scripts" / "run.sh").read_text()


def test_the_report_says_which_env_file_its_thresholds_came_from(tmp_path: Path) -> None:
    log, env_file = tmp_path / "empty.log", tmp_path / "ops.env"
    log.write_text("")
    env_file.write_text("REPORT_MIN_HOURS=12\n")
    proc = subprocess.run([sys.executable, str(ROOT / "validate_funding_comparison.py"), str(log)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "VOLSPIKE_ENV_FILE": str(env_file)})
    assert proc.returncode == 2 and f"env file: loaded {env_file}" in proc.stderr, proc.stderr
