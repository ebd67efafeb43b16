"""The state file beside the shared Redis store: frame → API freshness and daemon CPU per frame.

Run: ``python -m bench.bench_store [--seconds 20]`` (needs ``redis-server``). For each store the real daemon runs
as a process against the fake exchange (700 symbols, 4 frames a second) and the real API in another; freshness is
the time from a frame's creation (Binance's event time ``E``) to the moment the API answers with it, polled every
3 ms; CPU is the daemon's user + system time divided by the frames it received. The absolute latency includes this
process's own work (the fake builds two 120 KB frames, ~6 ms, and shares the GIL with the polling): compare the
two lines, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_daemon_resources import cpu_seconds  # noqa: E402
from volspike_funding.fake.http_fake import free_port, wait_until_serving  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402



def measure(store_url: str, tmp: Path, seconds: float) -> tuple[list[float], list[float], float]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)  # the API's file watcher needs the directory to exist
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_LOG_LEVEL": "WARNING",
           "FUNDING_STORE_URL": store_url, "FUNDING_STATE_FILE": str(tmp / "state.json"),
           "FUNDING_REFERENCE_ENABLED": "false", "FUNDING_API_PORT": str(port)}
    with FakeBinanceWS(cadence_s=0.25) as fake:
        env["BINANCE_WS_URL"] = fake.url
        daemon = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py")], env=env)
        api = subprocess.Popen([sys.executable, str(ROOT / "funding_api_server.py")], env=env)
        url = f"http://127.0.0.1:{port}/funding/ETHUSDT"
        session = requests.Session()
        try:
            wait_until_serving(url)
            cpu0, frames0 = cpu_seconds(daemon.pid), fake.stats["frames_sent"]
            lags, store_lags, seen, end = [], [], 0, time.monotonic() + seconds
            while time.monotonic() < end:
                body = session.get(url, timeout=1).json()
                if body.get("eventTime", 0) > seen:
                    if seen:  # the first one may be old
                        now = time.time()
                        lags.append((now - body["eventTime"] / 1000) * 1000)
                        store_lags.append((now - body["updatedAt"]) * 1000)  # from the daemon's receive
                    seen = body["eventTime"]
                time.sleep(0.003)  # this process also runs the fake exchange: leave it the GIL
            per_frame = (cpu_seconds(daemon.pid) - cpu0) / max(1, fake.stats["frames_sent"] - frames0) * 1000
        finally:
            for proc in (api, daemon):
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
    return lags, store_lags, per_frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    server = shutil.which("redis-server")
    if server is None:
        print("bench_store: redis-server is not installed", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    port = free_port()
    redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        for label, url in (("state file", ""), ("redis", f"redis://127.0.0.1:{port}/0")):
            lags, store_lags, per_frame = measure(url, tmp / label.replace(" ", "-"), args.seconds)
            lags.sort()
            print(f"{label:10s}: frame -> API p50 {statistics.median(lags):6.2f} ms, p99 "
                  f"{lags[int(0.99 * (len(lags) - 1))]:6.2f} ms; daemon receive -> API p50 "
                  f"{statistics.median(store_lags):6.2f} ms ({len(lags)} frames); daemon CPU {per_frame:.2f} ms "
                  "per frame")
    finally:
        redis.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
