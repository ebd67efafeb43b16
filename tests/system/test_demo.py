"""The offline demo as a person runs it: everything on the bundled fakes, and a signal stops all it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ..conftest import ROOT, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def get(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_demo_is_offline_and_a_signal_stops_everything_it_started(tmp_path: Path, signum: int) -> None:
    port = free_port()
    out = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDING_", "BINANCE_", "VOLSPIKE_"))}
    with out.open("w") as sink:
        demo = subprocess.Popen([sys.executable, "-m", "volspike_funding.demo", "--api-port", str(port)], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(base + "/funding/BTCUSDT") == 200, 30)
        # REST points at the bundled fake: reference data is there (a demo with REST at Binance had none).
        wait_until(lambda: get(base + "/fapi/v1/exchangeInfo") == 200, 30)
        workdir = Path(re.search(r"state file (\S+)", out.read_text()).group(1)).parent
        started = children(demo.pid)
        assert len(started) == 2 and workdir.is_dir()
        demo.send_signal(signum)
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
    wait_until(lambda: not any(alive(pid) for pid in started), 15)
    assert get(base + "/funding/health") is None and not workdir.exists()
    text = out.read_text()
    assert " WARNING " not in text and "Traceback" not in text, text[-3000:]


def test_demo_on_a_port_in_use_names_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "volspike_funding.demo", "--api-port", str(port)],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"port {port} is in use" in proc.stderr and "--api-port" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_the_fake_exchange_runs_on_its_own_for_an_offline_install_check(tmp_path: Path) -> None:
    """DEPLOYMENT.md's offline check runs the bundled fake on fixed ports for the installed units."""
    ws_port, rest_port = free_port(), free_port()
    fake = subprocess.Popen([sys.executable, "-m", "volspike_funding.fake", "--ws-port", str(ws_port),
                             "--rest-port", str(rest_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: get(f"http://127.0.0.1:{rest_port}/fapi/v1/exchangeInfo") == 200, 20)
        with socket.create_connection(("127.0.0.1", ws_port), timeout=2):
            pass
        fake.send_signal(signal.SIGTERM)
        out, err = fake.communicate(timeout=20)
    finally:
        if fake.poll() is None:
            fake.kill()
    assert fake.returncode == 0 and "Traceback" not in err
    assert f"BINANCE_WS_URL=ws://127.0.0.1:{ws_port}/market/stream?streams=!markPrice@arr@1s" in out
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = subprocess.run([sys.executable, "-m", "volspike_funding.fake", "--rest-port",
                               str(taken.getsockname()[1]), "--ws-port", str(free_port())], cwd=ROOT,
                              capture_output=True, text=True, timeout=20)
    assert busy.returncode == 1 and busy.stderr.count("\n") == 1 and "--rest-port" in busy.stderr


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("name", [".funding_state.json", ".funding_reference.json"])
def test_the_files_a_run_leaves_in_the_checkout_are_git_ignored(name: str) -> None:
    assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", name]).returncode == 0
