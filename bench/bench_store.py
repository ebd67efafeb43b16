"""The state file beside the shared Redis store: frame → API freshness and daemon CPU per frame.

Run: ``python -m bench.bench_store [--seconds 20]`` (needs ``redis-server``). For each store the real daemon runs
as a process against the fake exchange (700 symbols, 4 frames a second) and the real API in another; freshness is
the time from a frame's creation (Binance's event time ``E``) to the moment the API answers with it, polled every
3 ms; CPU is the daemon's user + system time divided by the frames it received. The absolute latency includes this
process's own work (the fake builds two 120 KB frames, ~6 ms, and shares the GIL with the polling): compare the
two lines, measured side by side in one run.

First it prints what one idle API costs the shared store for the market document (klines and tickers, ~2.5 MB at
600 symbols): the bytes Redis sends it per minute (``INFO stats`` total_net_output_bytes, less the INFO calls'
own) while the document does not change. ``--market-only`` prints that alone.
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
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_daemon_resources import cpu_seconds  # noqa: E402
from volspike_funding.fake.http_fake import free_port, wait_until_serving  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.store.redis_market import RedisMarketCache, RedisMarketWriter  # noqa: E402



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


def market_document(symbols: int = 600, hours: int = 26) -> dict[str, Any]:
    """A market document of the daemon's shape and size: ``hours`` 1 h candles and a ticker per symbol."""
    now = time.time()
    open_hour = int(now) // 3600 * 3600 * 1000
    row = ["65432.10", "65500.00", "65400.00", "65450.20", "1234.567", 0, "80765432.12345", 23456, "617.283",
           "40382716.06", "0"]
    klines, tickers = {}, {}
    for i in range(symbols):
        symbol = f"S{i:03d}USDT"
        opens = [open_hour - h * 3_600_000 for h in range(hours - 1, -1, -1)]
        klines[symbol] = {"since": now - 7200, "rows": [[t, *row[:5], t + 3_599_999, *row[6:]] for t in opens],
                          "final": [True] * (hours - 1) + [False], "receivedAt": now, "firstOpen": None}
        tickers[symbol] = {"symbol": symbol, "priceChange": "-94.99", "priceChangePercent": "-0.145",
                           "weightedAvgPrice": "65432.10", "lastPrice": "65450.20", "lastQty": "0.003",
                           "openPrice": "65545.19", "highPrice": "66000.00", "lowPrice": "65000.00",
                           "volume": "123456.789", "quoteVolume": "8076543212.34", "openTime": open_hour,
                           "closeTime": open_hour + 86_399_999, "firstId": 1, "lastId": 2, "count": 3, "E": 0}
    return {"writtenAt": now, "connected": True, "lastFrameAt": now, "reason": None, "interval": "1h",
            "klines": klines, "tickers": tickers}


def market_reads(url: str, seconds: float) -> tuple[int, float]:
    """One idle reader of an unchanged market document: its size, and the bytes Redis sends per minute."""
    import redis as redis_client

    size = RedisMarketWriter(url).write(market_document())
    client = redis_client.Redis.from_url(url)

    def sent() -> int:
        return int(client.info("stats")["total_net_output_bytes"])

    info_cost = -sent() + sent()  # what one INFO reply adds
    cache = RedisMarketCache(url)
    try:
        deadline = time.monotonic() + 10
        while cache.get().error is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = sent()
        time.sleep(seconds)
        delta = sent() - before - info_cost
    finally:
        cache.stop()
    return size, delta * 60 / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--market-only", action="store_true", help="only the idle market reader's bytes")
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
        size, per_minute = market_reads(f"redis://127.0.0.1:{port}/0", args.seconds)
        print(f"market document {size / 1e6:.2f} MB unchanged: one idle API reads {per_minute / 1e6:.3f} MB a minute "
              f"from redis ({per_minute / 1e3:.1f} KB)")
        if args.market_only:
            return 0
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
