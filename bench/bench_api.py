"""API benchmarks: freshness, throughput next to a constant route, and all-symbols batch latency.

Run: ``python -m bench.bench_api``. The API runs in its own process (real uvicorn), the daemon in another, the
fake exchange and the client here. Targets: freshness p50 <= 2 ms and p99 <= 5 ms beyond the daemon's write;
``/funding/{symbol}`` >= 0.8x the req/s of a constant route; all-symbols batch p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(state_file: str, port: int) -> None:
    """Server mode: the real app, plus one constant-returning route, under the production server configuration
    (the API's own socket, protocol and limits: what ships is what is measured)."""
    from volspike_funding.api.app import create_app
    from volspike_funding.api.server import Server, bind, server_config
    from volspike_funding.store.view import StateCache
    from volspike_funding.core.settings import load_settings

    settings = load_settings({"VOLSPIKE_ENV_FILE": "/nonexistent", "FUNDING_STATE_FILE": state_file})
    cache = StateCache(Path(state_file)).start()
    app = create_app(cache, 60.0)

    @app.get("/bench/constant")
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    Server(server_config(app, settings, "warning")).run(sockets=[bind("127.0.0.1", port)])


def watch_renames(state: Path, out: list[float]) -> None:
    """Timestamp every replace of the state file as inotify reports it: the moment the daemon's write is done."""
    from volspike_funding.store.filewatch import DirWatch

    watch = DirWatch(state.parent, poll_s=5)
    identity = None
    while True:
        watch.wait()
        now = time.time()
        try:
            current = state.stat().st_ino
        except OSError:
            continue
        if current != identity:
            identity = current
            out.append(now)



def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    return conn.getresponse().read()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(port: int, path: str, seconds: float) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        get(conn, path)
        n += 1
    conn.close()
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", nargs=2, metavar=("STATE_FILE", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--poll-ms", type=float, default=0.2, help="client pause between freshness polls")
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    from volspike_funding.fake.http_fake import free_port, wait_until_serving
    from volspike_funding.fake.rest_server import FakeBinanceRest
    from volspike_funding.fake.ws_server import FakeBinanceWS

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    state = tmp / "state.json"
    port = free_port()
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_LOG_LEVEL": "WARNING"}
    with FakeBinanceWS(cadence_s=0.25) as fake, FakeBinanceRest(fake.market) as rest:
        # Reference data on, as in production: funding terms in every answer, listing checks in the daemon.
        env["BINANCE_REST_URL"] = rest.url
        daemon = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py"), "--ws-url", fake.url,
                                   "--state-file", str(state)], env=env)
        api = subprocess.Popen([sys.executable, "-m", "bench.bench_api", "--serve", str(state), str(port)],
                               env=env, cwd=ROOT)
        try:
            wait_until_serving(f"http://127.0.0.1:{port}/funding/health",
                               ready=lambda status, body: json.loads(body)["status"] == "healthy")
            conn = http.client.HTTPConnection("127.0.0.1", port)
            renames: list[float] = []
            watcher = threading.Thread(target=watch_renames, args=(state, renames), daemon=True)
            watcher.start()
            lags, mtime_lags, polls, polling = [], [], 0, 0.0
            for k in range(args.samples):
                price = 1000.0 + k
                fake.market.set_mark("ETHUSDT", price)
                t0 = time.perf_counter()
                while json.loads(get(conn, "/funding/ETHUSDT"))["markPrice"] != price:
                    time.sleep(args.poll_ms / 1000)  # leave the two cores to the daemon and the API
                    polls += 1
                polling += time.perf_counter() - t0
                seen = time.time()
                mtime_lags.append((seen - state.stat().st_mtime_ns / 1e9) * 1000)
                lags.append((seen - max(t for t in renames if t <= seen)) * 1000)
            fresh = lags
            const = throughput(port, "/bench/constant", args.seconds)
            symbol = throughput(port, "/funding/BTCUSDT", args.seconds)
            batch = []
            conn = http.client.HTTPConnection("127.0.0.1", port)  # the old one idled past keep-alive
            for _ in range(200):
                t0 = time.perf_counter()
                get(conn, "/funding/batch")
                batch.append((time.perf_counter() - t0) * 1000)
        finally:
            api.terminate()
            daemon.terminate()
            api.wait(10)
            daemon.wait(10)
    print(f"freshness beyond the daemon's write ({len(fresh)} samples): p50 {statistics.median(fresh):.2f} ms, "
          f"p99 {pct(fresh, 0.99):.2f} ms   (targets <= 2 / <= 5 ms)")
    print(f"  (includes the client's polling: one poll every {polling / max(polls, 1) * 1000:.2f} ms, so about half "
          "of that plus one request's latency is measurement, not API)")
    print(f"  (the same measured from the file's mtime, whose clock ticks in jiffies: p50 "
          f"{statistics.median(mtime_lags):.2f} ms, p99 {pct(mtime_lags, 0.99):.2f} ms)")
    print(f"throughput, one keep-alive client: /funding/BTCUSDT {symbol:.0f} req/s, constant route {const:.0f} "
          f"req/s, ratio {symbol / const:.2f}x   (target >= 0.8x)")
    print(f"all-symbols batch (700): p50 {statistics.median(batch):.2f} ms, p99 {pct(batch, 0.99):.2f} ms   "
          f"(target p50 <= 5 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
