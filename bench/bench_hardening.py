"""The attack report's reliability figures, re-measured: idle/slowloris survival at the unit's descriptor limit,
recovery from a frame stamped an hour ahead, writers after the lock file is removed, the feed while the exchange
refuses every SUBSCRIBE, and serving with the host clock ten minutes off.

Run: ``python -m bench.bench_hardening``. Real processes on loopback: the API under ``prlimit`` with the unit's
``LimitNOFILE=16384`` (and with systemd's default 1,024 soft limit, which the API raises to the hard one), the
daemon against the fake exchange. Before the fixes: 8 of 8 requests timed out with 1,100 idle connections;
89,688 good updates were skipped in 75 s after one future frame, a restart did not help; 86 writer switches in
10 s after the lock file was removed.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.api.test_api import put_state, record  # noqa: E402
from volspike_funding.fake.http_fake import free_port, wait_until_serving  # noqa: E402
from volspike_funding.core.settings import load_settings  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.feed.daemon import Daemon  # noqa: E402



def latencies(url: str, n: int = 40) -> tuple[int, list[float]]:
    ok, times = 0, []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            ok += requests.get(url, timeout=5).status_code == 200
        except requests.RequestException:
            pass
        times.append((time.perf_counter() - t0) * 1000)
    return ok, times


def idle_survival(tmp: Path, nofile: str, idle: int, slow: int) -> str:
    state = tmp / ".funding_state.json"
    put_state(state, {"BTCUSDT": record("BTCUSDT", 0)})
    port = free_port()
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_STATE_FILE": str(state),
           "FUNDING_API_PORT": str(port), "FUNDING_LOG_LEVEL": "WARNING"}
    log = tmp / f"api-{nofile}.log"
    proc = subprocess.Popen(["prlimit", f"--nofile={nofile}", sys.executable, str(ROOT / "funding_api_server.py")],
                            env=env, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/funding/BTCUSDT"
    held: list[socket.socket] = []
    try:
        wait_until_serving(url, 15)
        base_ok, base = latencies(url)
        held += [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        for _ in range(slow):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /funding/BTCUSDT HTTP/1.1\r\nHost: x\r\n")
            held.append(s)
        ok, under = latencies(url)
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    text = log.read_text()
    return (f"  nofile {nofile}: {ok}/{len(under)} requests served with {idle} idle + {slow} slowloris held, "
            f"p50 {statistics.median(under):.1f} ms (idle baseline {statistics.median(base):.1f} ms, "
            f"{base_ok}/{len(base)}); API log {text.count(chr(10))} lines, {text.count('Traceback')} tracebacks")


def daemon(url: str, state: Path, tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_LOG_LEVEL": "ERROR",
           "FUNDING_REFERENCE_ENABLED": "false"}
    return subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py"), "--ws-url", url,
                             "--state-file", str(state), "--heartbeat-s", "0.2"], env=env,
                            stderr=subprocess.DEVNULL)


def read(state: Path) -> dict:
    for _ in range(50):
        try:
            return json.loads(state.read_bytes())
        except (OSError, ValueError):
            time.sleep(0.01)
    raise RuntimeError("state file unreadable")


def future_recovery(tmp: Path) -> str:
    state = tmp / "future" / ".funding_state.json"
    with FakeBinanceWS(cadence_s=1.0) as fake:
        proc = daemon(fake.url, state, tmp)
        try:
            while not (state.exists() and len(read(state)["funding_state"]) >= 700):
                time.sleep(0.05)
            ahead = int(time.time() * 1000) + 3_600_000
            items = [{"e": "markPriceUpdate", "E": ahead, "s": s, "p": "1.23", "P": "1.23", "i": "1.23", "r": "0.0001",
                      "T": ahead, "st": 1} for s in fake.market.contracts]
            t0 = time.time()
            fake.send_garbage(json.dumps({"stream": "!markPrice@arr@1s", "data": items}))
            while True:
                doc = read(state)
                recs = doc["funding_state"].values()
                if doc["counters"]["malformed"].get("implausible_time") and all(r["updatedAt"] > t0 for r in recs):
                    break
                time.sleep(0.02)
            recovered = time.time() - t0
            skipped = doc["counters"]["out_of_order"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    return (f"  every symbol updated again {recovered:.2f} s after a frame stamped 1 h ahead (one frame a second); "
            f"good updates skipped: {skipped}")


def lock_removal(tmp: Path) -> str:
    state = tmp / "lock" / ".funding_state.json"
    with FakeBinanceWS(cadence_s=0.1) as fake:
        first = daemon(fake.url, state, tmp)
        second = None
        try:
            while not state.exists():
                time.sleep(0.05)
            time.sleep(0.5)
            state.with_name(state.name + ".lock").unlink()
            second = daemon(fake.url, state, tmp)
            pids, switches, last = set(), 0, None
            end = time.monotonic() + 10
            while time.monotonic() < end:
                pid = read(state)["daemon_pid"]
                switches += last is not None and pid != last
                last = pid
                pids.add(pid)
                time.sleep(0.01)
            first_code, second_code = first.poll(), second.poll()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(10)
    winner = "the first re-created its lock at its next write" if first_code is None else "the second took over"
    return (f"  lock file removed, second daemon started: {switches} writer switches in 10 s, {len(pids)} writer(s) "
            f"seen ({winner}; exit codes: first {first_code}, second {second_code}, None = still running)")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slow_readers(tmp: Path, clients: int, path: str, seconds: float = 25.0) -> str:
    """``clients`` connections that each send one request for ``path`` and never read; the API's RSS over time."""
    from tests.api.test_api_slow_readers import big_exchange_info

    work = Path(tempfile.mkdtemp(dir=tmp))
    state = work / ".funding_state.json"
    put_state(state, {"BTCUSDT": record("BTCUSDT", 0)})
    size = big_exchange_info(state)
    port = free_port()
    env = {**os.environ, "VOLSPIKE_ENV_FILE": str(work / "none"), "FUNDING_STATE_FILE": str(state),
           "FUNDING_API_PORT": str(port), "FUNDING_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(["prlimit", "--nofile=16384:16384", sys.executable, str(ROOT / "funding_api_server.py")],
                            env=env, stderr=subprocess.DEVNULL)
    held: list[socket.socket] = []
    try:
        wait_until_serving(f"http://127.0.0.1:{port}{path}", 15)
        base = rss_mb(proc.pid)
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            held.append(s)
        t0, peak = time.monotonic(), base
        while time.monotonic() - t0 < seconds:
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.5)
        ok, times = latencies(f"http://127.0.0.1:{port}/funding/BTCUSDT", 10)
        end = rss_mb(proc.pid)
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    answer = f"{size / 1e3:.0f} KB exchangeInfo" if "exchangeInfo" in path else path
    return (f"  {clients} clients of {answer} that never read: RSS {base:.0f} MB before, peak {peak:.0f} MB, "
            f"{end:.0f} MB after {seconds:.0f} s; a reading client meanwhile {ok}/10, p50 "
            f"{statistics.median(times):.1f} ms")


def _in_process_daemon(tmp: Path, name: str, env: dict[str, str], **options: object) -> tuple[Daemon, threading.Thread]:
    settings = load_settings({"VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_LOG_LEVEL": "ERROR",
                              "FUNDING_STATE_FILE": str(tmp / name / ".funding_state.json"), **env})
    daemon = Daemon(settings, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return daemon, thread


def refused_subscriptions(tmp: Path, seconds: float = 60.0) -> str:
    """Binance closing every connection that sends a SUBSCRIBE, for ``seconds``: how often the all-market data
    was fresh (newest update under 2 s old, sampled every 0.5 s) and how many connections it cost."""
    logging.disable(logging.WARNING)
    with FakeBinanceWS(cadence_s=1.0) as ws, FakeBinanceRest(ws.market) as rest:
        ws.close_on_subscribe = True
        daemon, thread = _in_process_daemon(tmp, "subs", {"BINANCE_WS_URL": ws.url, "BINANCE_REST_URL": rest.url,
                                                          "FUNDING_REFERENCE_ENABLED": "true"})
        state = daemon.settings.state_file
        while not (state.exists() and read(state)["funding_state"]):
            time.sleep(0.1)
        fresh = samples = 0
        end = time.time() + seconds
        while time.time() < end:
            recs = read(state)["funding_state"].values()
            samples += 1
            fresh += bool(recs) and time.time() - max(r["updatedAt"] for r in recs) < 2.0
            time.sleep(0.5)
        daemon.request_stop()
        thread.join(10)
    logging.disable(logging.NOTSET)
    return (f"  {seconds:.0f} s of every SUBSCRIBE closed: all-market data fresh in {fresh} of {samples} samples "
            f"({fresh / samples:.0%}); {ws.stats['connections']} connections, {ws.stats['subscribe_closes']} refused "
            "(before: 10 reconnects in 120 s, health 503 in 233 of 237 probes)")


def clock_offset(tmp: Path, offset_s: float) -> str:
    """The host's clock ``offset_s`` off Binance's: how soon every symbol is served, and what was rejected."""
    logging.disable(logging.WARNING)
    with FakeBinanceWS(cadence_s=1.0) as ws:
        t0 = time.time()
        daemon, thread = _in_process_daemon(tmp, f"clock{offset_s:+.0f}", {"BINANCE_WS_URL": ws.url},
                                            clock=lambda: time.time() + offset_s)
        state = daemon.settings.state_file
        while not (state.exists() and len(read(state)["funding_state"]) >= 700):
            time.sleep(0.05)
        served = time.time() - t0
        time.sleep(10)
        doc = read(state)
        daemon.request_stop()
        thread.join(10)
    logging.disable(logging.NOTSET)
    return (f"  host clock {offset_s:+.0f} s: all 700 symbols served {served:.1f} s after start; "
            f"{doc['counters']['malformed'].get('implausible_time', 0)} items rejected in all, "
            f"{doc['connection_status']['reconnect_attempts']} reconnects, skew measured "
            f"{doc['clock']['skewMs'] / 1000:+.1f} s (before: 0 symbols served, ~38,000 items rejected in 90 s)")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hardening-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    print("idle and slowloris connections (API under prlimit):")
    print(idle_survival(tmp, "16384:16384", 2000, 300))   # the unit: LimitNOFILE=16384
    print(idle_survival(tmp, "1024:16384", 2000, 300))    # systemd's default soft limit under the same hard one
    print("slow readers (before the bounds: 4,000 clients of exchangeInfo took the API from 68 MB to 1,214 MB):")
    print(slow_readers(tmp, 4000, "/fapi/v1/ping"))
    print(slow_readers(tmp, 4000, "/fapi/v1/exchangeInfo"))
    print("event time an hour ahead:")
    print(future_recovery(tmp))
    print("lock file removal:")
    print(lock_removal(tmp))
    print("per-symbol subscriptions refused by the exchange:")
    print(refused_subscriptions(tmp))
    print("host clock ten minutes off:")
    print(clock_offset(tmp, 600))
    print(clock_offset(tmp, -600))
    return 0


if __name__ == "__main__":
    sys.exit(main())
