"""Deployment: the rendered units (verify, exposure, structure) and a real systemd in a container."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from volspike_funding.fake.ws_server import FakeBinanceWS

from ..conftest import ROOT, wait_until
from .nspawn import Container, cannot_boot_reason

FUNDING = ("binance-funding-ws.service", "binance-funding-api.service")
ALL_UNITS = FUNDING + ("volspike-volume-alerts.service", "volspike-oi-poller.service")
needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Units rendered for a prefix with a space in it, whose files are this checkout's."""
    base = tmp_path_factory.mktemp("render")
    prefix = base / "opt dir" / "volspike funding"
    (prefix / ".venv" / "bin").mkdir(parents=True)
    python = prefix / ".venv" / "bin" / "python"  # a wrapper: a symlinked venv interpreter loses its venv
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    for entry in ROOT.iterdir():
        if entry.name not in (".venv", ".git"):
            (prefix / entry.name).symlink_to(entry)
    out = base / "units"
    subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--prefix", str(prefix), "--render-only", str(out)],
                   check=True, capture_output=True)
    return out


def unit(rendered: Path, name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((rendered / name).read_text())
    return parser


@needs_systemd_analyze
def test_rendered_units_verify_clean(rendered: Path) -> None:
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(map(str, rendered.iterdir()))],
                          capture_output=True, text=True, cwd=rendered)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


@needs_systemd_analyze
@pytest.mark.parametrize("name", ALL_UNITS)
def test_exposure_is_at_most_2(rendered: Path, name: str) -> None:
    # systemd 252's --threshold takes ten times the displayed score.
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(rendered / name)],
                          capture_output=True, text=True)
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr).group(1))
    assert proc.returncode == 0 and score <= 2.0, score


@pytest.mark.parametrize("name", ALL_UNITS)
def test_every_exec_start_target_exists_and_answers_help(rendered: Path, name: str) -> None:
    argv = shlex.split(unit(rendered, name)["Service"]["ExecStart"])
    assert all(Path(a).exists() for a in argv) and " " in argv[1]
    proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_unit_structure_matches_the_services_behaviour(rendered: Path) -> None:
    ws, api = unit(rendered, FUNDING[0]), unit(rendered, FUNDING[1])
    assert ws["Service"]["Type"] == "notify" and int(ws["Service"]["WatchdogSec"]) > 0
    assert ws["Service"]["Restart"] == "always" and "network-online.target" in ws["Unit"]["Wants"]
    for name, u in zip(FUNDING, (ws, api)):
        assert "StartLimitBurst" in u["Unit"] and "StartLimitBurst" not in u["Service"]
        assert "\nEnvironment=PYTHONUNBUFFERED=1\n" in (rendered / name).read_text()
        assert u["Service"]["EnvironmentFile"].startswith("-/")
    assert "Requires" not in api["Unit"] and FUNDING[0] in api["Unit"]["Wants"] and FUNDING[0] in api["Unit"]["After"]
    assert api["Service"]["IPAddressDeny"] == "any" and api["Service"]["IPAddressAllow"] == "localhost"
    state = [re.search(r"FUNDING_STATE_FILE=([^\"]+)", (rendered / n).read_text()).group(1) for n in FUNDING]
    assert state[0] == state[1]  # both services read and write the same file
    assert ws["Service"]["StateDirectory"] == api["Service"]["StateDirectory"]


@pytest.mark.parametrize("name", ALL_UNITS)
def test_each_unit_names_itself_in_the_journal(rendered: Path, name: str) -> None:
    assert unit(rendered, name)["Service"]["SyslogIdentifier"] == name.removesuffix(".service")  # not "python"


def test_a_daemon_without_binance_never_exhausts_its_start_limit(rendered: Path) -> None:
    """Without data the daemon never sends READY=1: each start lasts TimeoutStartSec, then RestartSec. Fewer starts
    than StartLimitBurst fit in StartLimitIntervalSec, so it keeps retrying for as long as the network is away."""
    ws = unit(rendered, FUNDING[0])
    cycle = int(ws["Service"]["TimeoutStartSec"]) + int(ws["Service"]["RestartSec"])
    assert int(ws["Unit"]["StartLimitIntervalSec"]) / cycle <= int(ws["Unit"]["StartLimitBurst"])


def test_install_script_documents_its_exit_codes_and_needs_no_sudo() -> None:
    script = (ROOT / "deploy" / "install.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "sudo" not in code  # a root Debian droplet has no sudo
    help_text = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "Exit codes: 0 installed and serving" in help_text and "3 installed and enabled" in help_text


def test_install_script_refuses_bad_usage() -> None:
    proc = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--frobnicate"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


# -- a real systemd --------------------------------------------------------------------------------------------

REASON = cannot_boot_reason()


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    if REASON:
        pytest.skip(f"cannot boot a systemd container here: {REASON}")
    c = Container(Path("/var/tmp") / f"volspike-nspawn-{os.getpid()}", {str(ROOT): "/srv/volspike-src"})
    try:
        c.boot()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        c.shutdown()
        pytest.skip(f"cannot boot a systemd container here: {exc}")
    yield c
    c.shutdown()


def status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def show(c: Container, name: str, prop: str) -> str:
    return c.run("systemctl", "show", "-p", prop, "--value", name).stdout.strip()


def test_installed_under_real_systemd_with_watchdog_restart_and_clean_stop(container: Container) -> None:
    port = int(subprocess.run([sys.executable, "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0));"
                               "print(s.getsockname()[1])"], capture_output=True, text=True).stdout)
    with FakeBinanceWS(cadence_s=0.5) as fake:
        container.run("install", "-d", "/etc/volspike")
        container.run("sh", "-c", "cat > /etc/volspike/volspike.env", input=(
            f"BINANCE_WS_URL={fake.url}\nFUNDING_API_PORT={port}\nFUNDING_STALE_AFTER_S=3\n"
            "FUNDING_NO_DATA_TIMEOUT_S=2\nFUNDING_HEARTBEAT_S=1\n"
            # The market feed's child process under the hardened unit (its tickers need no REST).
            f"FUNDING_MARKET_ENABLED=true\nFUNDING_MARKET_WS_URL={fake.market_url}\n"))
        # Faster than production so that the test takes seconds: the same mechanism, smaller numbers.
        container.run("sh", "-c", "mkdir -p /etc/systemd/system/binance-funding-ws.service.d && printf "
                      "'[Service]\\nWatchdogSec=4\\nRestartSec=1\\n' > "
                      "/etc/systemd/system/binance-funding-ws.service.d/test.conf")
        install = ("bash", "/srv/volspike-src/deploy/install.sh", "--prefix", "/opt/volspike funding", "--python",
                   "/usr/bin/python3")
        container.run(*install, timeout=600)
        wait_until(lambda: show(container, FUNDING[0], "ActiveState") == "active", 60)
        assert "symbols" in show(container, FUNDING[0], "StatusText")  # READY=1 came with data
        wait_until(lambda: show(container, FUNDING[1], "ActiveState") == "active", 30)
        health = f"http://127.0.0.1:{port}/funding/health"
        wait_until(lambda: status(health) == 200, 30)
        assert requests.get(f"http://127.0.0.1:{port}/funding/BTCUSDT", timeout=2).json()["markPrice"] > 0
        wait_until(lambda: status(f"http://127.0.0.1:{port}/fapi/v1/ticker/24hr?symbol=BTCUSDT") == 200, 30)
        assert show(container, FUNDING[0], "User") == "volspike"

        container.run("systemctl", "kill", "--signal=SIGSTOP", FUNDING[0])  # hung: no more watchdog pets
        answers = []
        wait_until(lambda: answers.append(status(health)) or
                   int(show(container, FUNDING[0], "NRestarts") or 0) >= 1, 60)
        assert set(answers) <= {200, 503}  # the API kept answering, honestly, through the restart
        wait_until(lambda: status(health) == 200, 60)

        container.run("systemctl", "stop", FUNDING[0])
        final = json.loads(container.run("cat", "/var/lib/volspike-funding/.funding_state.json").stdout)
        assert final["connection_status"]["connected"] is False and final["stopped_at"] is not None
        market = json.loads(container.run("cat", "/var/lib/volspike-funding/.funding_market.json").stdout)
        assert market["reason"] == "daemon stopping"  # the child stopped in its own time, not killed
        stopped = requests.get(health, timeout=2)
        assert stopped.status_code == 503 and stopped.json()["reasons"][0] == "daemon stopped"

        again = container.run(*install, timeout=600)
        assert "created system user" not in again.stdout  # idempotent
        wait_until(lambda: show(container, FUNDING[0], "ActiveState") == "active", 60)
        container.run("bash", "/srv/volspike-src/deploy/install.sh", "--uninstall", "--prefix",
                      "/opt/volspike funding")
        assert show(container, FUNDING[0], "LoadState") == "not-found"
        assert container.run("test", "-e", "/opt/volspike funding", check=False).returncode == 1


def test_install_refuses_to_run_beside_the_original_scripts(container: Container) -> None:
    """Both generations at once would send every alert twice: install refuses, or replaces them when told to."""
    legacy = "oi-realtime-poller.service"
    container.run("sh", "-c", f"printf '[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\n"
                              f"WantedBy=multi-user.target\\n' > /etc/systemd/system/{legacy} && "
                              f"systemctl daemon-reload && systemctl enable --now {legacy}")
    install = ("bash", "/srv/volspike-src/deploy/install.sh", "--prefix", "/opt/volspike funding", "--python",
               "/usr/bin/python3", "--no-start")
    try:
        refused = container.run(*install, check=False, timeout=120)
        assert refused.returncode == 2 and legacy in refused.stderr and "--replace-legacy" in refused.stderr
        assert show(container, legacy, "ActiveState") == "active"  # nothing was touched
        replaced = container.run(*install, "--replace-legacy", timeout=600)
        assert f"stopped and disabled the original {legacy}" in replaced.stdout
        assert show(container, legacy, "ActiveState") == "inactive"
        assert show(container, legacy, "UnitFileState") == "disabled"
        assert container.run("test", "-f", f"/etc/volspike/legacy-units/{legacy}", check=False).returncode == 0
    finally:
        container.run("bash", "/srv/volspike-src/deploy/install.sh", "--uninstall", "--prefix",
                      "/opt/volspike funding", check=False)
        container.run("sh", "-c", f"systemctl disable --now {legacy}; rm -f /etc/systemd/system/{legacy}; "
                                  "systemctl daemon-reload", check=False)


def test_install_without_binance_finishes_quickly_and_recovers_and_uninstall_finds_the_prefix(
        container: Container) -> None:
    """No network to Binance: install says so and exits 3 within its --wait, the units enabled; once Binance is
    reachable the daemon serves by itself. The operator's /home/trader/.volspike.env is imported (the units cannot
    read /home). --uninstall without --prefix removes the prefix the units name."""
    port, ws_port = (int(subprocess.run([sys.executable, "-c", "import socket; s=socket.socket(); "
                                          "s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"],
                                         capture_output=True, text=True).stdout) for _ in range(2))
    prefix, env_file = "/opt/volspike offline", "/etc/volspike-offline/volspike.env"
    legacy = (f"BINANCE_WS_URL=ws://127.0.0.1:{ws_port}/market/stream?streams=!markPrice@arr@1s\n"
              f"BINANCE_REST_URL=http://127.0.0.1:9\nFUNDING_API_PORT={port}\nFUNDING_BACKOFF_MAX_S=1\n"
              "FUNDING_CONNECT_TIMEOUT_S=1\nFUNDING_REFERENCE_ENABLED=false\n")
    container.run("sh", "-c", "mkdir -p /home/trader && cat > /home/trader/.volspike.env", input=legacy)
    try:
        install = ("bash", "/srv/volspike-src/deploy/install.sh", "--prefix", prefix, "--env-file", env_file,
                   "--python", "/usr/bin/python3", "--wait", "5")
        done = container.run(*install, check=False, timeout=600)
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"imported /home/trader/.volspike.env into {env_file}" in done.stdout
        assert "the daemon cannot reach Binance yet after 5 s: cannot connect to 127.0.0.1: Connection refused\n" in done.stdout, \
            done.stdout
        assert f"outbound connections to 127.0.0.1:{ws_port}" in done.stdout
        assert container.run("cat", env_file).stdout == legacy
        assert show(container, FUNDING[0], "UnitFileState") == "enabled"
        with FakeBinanceWS(cadence_s=0.5, port=ws_port):  # the network is there now
            wait_until(lambda: show(container, FUNDING[0], "ActiveState") == "active", 90)
            wait_until(lambda: status(f"http://127.0.0.1:{port}/funding/health") == 200, 120)
        journal = container.run("journalctl", "-u", FUNDING[0], "-o", "short", "--no-pager").stdout
        assert "binance-funding-ws[" in journal and "python[" not in journal
        refused = container.run("bash", "/srv/volspike-src/deploy/install.sh", "--uninstall", "--prefix",
                                "/opt/elsewhere", check=False)
        assert refused.returncode == 2 and f"--prefix '{prefix}'" in refused.stderr
        gone = container.run("bash", "/srv/volspike-src/deploy/install.sh", "--uninstall")
        assert f"uninstalled from {prefix}" in gone.stdout
        assert container.run("test", "-e", prefix, check=False).returncode == 1
    finally:
        container.run("bash", "/srv/volspike-src/deploy/install.sh", "--uninstall", check=False)
        container.run("rm", "-rf", "/home/trader", "/etc/volspike-offline", check=False)


def test_deployment_mds_offline_check_runs_as_written(container: Container) -> None:
    """The commands of DEPLOYMENT.md's "Offline check of a fresh droplet", verbatim (only the checkout's path
    differs), in a booted systemd: install against the bundled fake, curl, remove."""
    docs = (ROOT / "DEPLOYMENT.md").read_text(encoding="utf-8")
    section = docs.split("### Offline check of a fresh droplet", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("/root/volspike-funding-src",
                                                                        "/srv/volspike-src")
    assert "deploy/install.sh --uninstall" in script
    script = script.replace("deploy/install.sh --prefix", "deploy/install.sh --python /usr/bin/python3 --prefix")
    done = container.run("bash", "-euo", "pipefail", "-c", script, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"status":"healthy"' in done.stdout.replace(" ", "") and '"symbol":"BTCUSDT"' in done.stdout
    assert "binance-funding-ws[" in done.stdout and "uninstalled from /opt/volspike-check" in done.stdout
    for path in ("/opt/volspike-check", "/etc/volspike-check"):
        assert container.run("test", "-e", path, check=False).returncode == 1
    assert show(container, FUNDING[0], "LoadState") == "not-found"
