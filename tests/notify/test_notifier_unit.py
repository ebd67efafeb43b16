"""The notifier's unit: rendered by install.sh, hardened exactly as the consumers' units, valid for systemd."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

NAME = "volspike-health-notifier.service"
#: Lines that differ by purpose (what runs, where its state is, how it restarts); every other one is hardening.
OWN = ("Description", "ExecStart", "Environment", "SyslogIdentifier", "RestartPreventExitStatus", "Wants")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("render")
    prefix = base / "opt dir" / "volspike funding"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    python = prefix / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".git"):
            (prefix / entry.name).symlink_to(entry)
    out = base / "units"
    subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--prefix", str(prefix), "--render-only", str(out)],
                   check=True, capture_output=True)
    return out


def settings_of(path: Path) -> list[tuple[str, str, str]]:
    section, rows = "", []
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            rows.append((section, key, value))
    return rows


def test_hardened_as_the_consumers(rendered: Path) -> None:
    mine = [r for r in settings_of(rendered / NAME) if r[1] not in OWN]
    theirs = [r for r in settings_of(rendered / "volspike-oi-poller.service") if r[1] not in OWN]
    assert mine == theirs
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((rendered / NAME).read_text())
    assert "binance-funding-api" not in unit["Unit"]["Wants"]  # the API down is what it reports, not a dependency
    assert unit["Service"]["RestartPreventExitStatus"] == "2"
    assert re.search(r"HEALTH_NOTIFY_STATE_FILE=%S/", (rendered / NAME).read_text())
    argv = shlex.split(unit["Service"]["ExecStart"])
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "Exit codes" in proc.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verifies_clean_and_exposure_at_most_2(rendered: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(rendered / NAME)], capture_output=True,
                          text=True, cwd=rendered)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(rendered / NAME)],
                          capture_output=True, text=True)
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr).group(1))
    assert proc.returncode == 0 and score <= 2.0, score


def test_install_sh_enables_it_only_with_the_flag() -> None:
    script = (ROOT / "deploy" / "install.sh").read_text()
    assert "--with-notifier) NOTIFIER=yes" in script and '[ "$NOTIFIER" = yes ] && units+=' in script
    assert re.search(r'for unit in "\$\{NOTIFIER_UNITS\[@\]\}".*do\n\s+systemctl disable --now', script)
