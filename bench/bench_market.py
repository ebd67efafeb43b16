"""The market feed's costs and gains, side by side in one run.

1. Daemon CPU % of one core and mark-price freshness (the state file's write minus the newest Binance event time,
   p50) with the market feed off, then on with ``--symbols`` kline streams pushed 4 times a second and tickers
   once (goals: CPU <= 15 %, freshness p50 within 10 % of off).
2. REST weight of the volume script's klines per hour (12 scans) in ``rest`` and warm ``ws`` mode (today 7,248 at
   604 symbols; goal <= 100), of the OI universe job's 24 h volumes (480 an hour; goal <= 20), and the heaviest
   REST minute at :00 from both consumers, next to the OI poller's steady ~2,000.

Run: ``python -m bench.bench_market [--symbols 600] [--seconds 30]``. The fakes run in this process (the kline and
ticker streams' in a child, as Binance's are elsewhere), the daemon in its own (its CPU and its child's are read
from /proc).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_daemon_resources import cpu_seconds, rss_mb  # noqa: E402
from volspike_funding.fake.market import Market  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.store import marketfile  # noqa: E402

OI_STEADY_PER_MIN = 2000  # the OI poller's measured steady weight (issue 21)
SCANS_PER_HOUR = 12


def family(pid: int) -> list[int]:
    """The daemon and its children (the market feed runs in one of its own)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        i += 1
    return pids


def family_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in family(pid))


def market_fake(symbols: int, pipe: Any) -> None:
    """The kline and ticker streams' fake in a process of its own: in the bench's process its ~2,400 messages a
    second would delay the mark-price fake's frames after they are stamped, and count against the daemon."""
    market = Market(symbols)  # seeded: the same symbols as the bench's own market
    with FakeBinanceWS(market, cadence_s=0.25) as ws:
        ws.ticker_every = 4
        pipe.send(ws.market_url)
        pipe.recv()
        pipe.send(ws.stats["kline_messages"])


def drain(market_url: str, symbols: list[str], pipe: Any) -> None:
    """A bare reader of the kline streams, for the run with the market feed off: the fake then sends as much as
    with it on, so the two runs differ by the daemon's own work only (the fakes share this machine's 2 cores)."""
    import json

    import websocket

    ws = websocket.create_connection(market_url, timeout=5)
    for i in range(0, len(symbols), 200):
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": [f"{s.lower()}@kline_1h" for s in symbols[i:i + 200]],
                            "id": i + 1}))
        time.sleep(0.2)
    ws.settimeout(0.5)
    while not pipe.poll():
        try:
            ws.recv()
        except websocket.WebSocketTimeoutException:
            pass
    ws.close()


def warm(market_file: Path) -> bool:
    doc = marketfile.read(market_file).document
    klines = doc.get("klines") or {}
    return bool(klines) and doc["backfill"]["pending"] == 0 and all(e["since"] is not None for e in klines.values())


def run_daemon(tmp: Path, ws: FakeBinanceWS, market_url: str, rest: FakeBinanceRest, market_on: bool,
               seconds: float) -> tuple[float, float, float, Path, subprocess.Popen[bytes]]:
    state = tmp / ("on" if market_on else "off") / "state.json"
    state.parent.mkdir(parents=True)
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": ws.url, "BINANCE_REST_URL": rest.url,
           "FUNDING_STATE_FILE": str(state), "FUNDING_LOG_LEVEL": "WARNING",
           "FUNDING_MARKET_ENABLED": "true" if market_on else "false", "FUNDING_MARKET_WS_URL": market_url,
           "FUNDING_KLINE_BACKFILL_WEIGHT_PER_MIN": "100000"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py")], env=env)
    market_file = marketfile.market_path(state, None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and (not market_on or warm(market_file))):
        time.sleep(0.5)
    time.sleep(3)
    cpu0, t0 = family_cpu(proc.pid), time.monotonic()
    lags: list[float] = []
    last = 0
    while time.monotonic() - t0 < seconds:
        try:
            st = state.stat()
            if st.st_mtime_ns != last:
                last = st.st_mtime_ns
                doc = orjson.loads(state.read_bytes())
                newest = max(r["eventTime"] for r in doc["funding_state"].values())
                lags.append(st.st_mtime_ns / 1e6 - newest)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    cpu = (family_cpu(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    rss = sum(rss_mb(p) for p in family(proc.pid))
    return cpu, statistics.median(lags) if lags else float("nan"), rss, state, proc


def scan_weight(state: Path, api_port_env: dict[str, str], rest: FakeBinanceRest, mode: str) -> int:
    """One volume scan's REST kline calls (each weight 1 at limit 2-3) in ``mode``, against the real API."""
    from volspike_funding.binance.rest import BinanceRest
    from volspike_funding.consumers.volume_alerts import VolumeAlerts
    from volspike_funding.consumers.volume_rules import slot_of
    from volspike_funding.core.settings import load_settings
    book = state.parent / f"book-{mode}"
    book.mkdir()
    settings = load_settings({**api_port_env, "FUNDING_SOURCE_MODE": mode, "BINANCE_REST_URL": rest.url,
                              "VOLUME_ALERT_STATE_FILE": str(book / "alerts.json")})
    before = rest.counts["/fapi/v1/klines"]
    VolumeAlerts(settings, rest=BinanceRest(rest.url, retries=1), dry_run=True).scan(
        slot_of(datetime.now(timezone.utc)))
    return rest.counts["/fapi/v1/klines"] - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-market-"))
    market = Market(args.symbols + 20)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    fake = multiprocessing.get_context("spawn").Process(target=market_fake, args=(args.symbols + 20, theirs),
                                                        daemon=True)
    fake.start()
    market_url = ours.recv()
    with FakeBinanceWS(market, cadence_s=1.0) as ws, FakeBinanceRest(market) as rest:
        rest.market_candles = True
        _, lag_idle, _, _, proc = run_daemon(tmp / "idle", ws, market_url, rest, False, args.seconds)
        proc.terminate()
        proc.wait(10)
        perpetuals = market.usdt_perpetuals()
        stop_drain, theirs_drain = multiprocessing.get_context("spawn").Pipe()
        reader = multiprocessing.get_context("spawn").Process(target=drain, args=(market_url, perpetuals, theirs_drain),
                                                              daemon=True)
        reader.start()
        cpu_off, lag_off, rss_off, _, proc = run_daemon(tmp, ws, market_url, rest, False, args.seconds)
        stop_drain.send("stop")
        reader.join(10)
        proc.terminate()
        proc.wait(10)
        cpu_on, lag_on, rss_on, state, proc = run_daemon(tmp, ws, market_url, rest, True, args.seconds)
        from volspike_funding.api.server import ServerThread
        from volspike_funding.core.settings import load_settings
        env = {"VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_STATE_FILE": str(state), "FUNDING_MARKET_ENABLED": "true"}
        try:
            with ServerThread(load_settings(env)) as api:
                env["WS_FUNDING_API_URL"] = api.url + "/funding"
                rest_scan = scan_weight(state, env, rest, "rest")
                ws_scan = scan_weight(state, env, rest, "ws")
            ours.send("stop")
            rate = ours.recv()
        finally:
            proc.terminate()
            proc.wait(10)
    klines = len(orjson.loads(marketfile.market_path(state, None).read_bytes())["klines"])
    print(f"{klines} kline streams at 4 updates/s ({rate} kline messages sent in all), tickers 1/s, "
          f"mark price 1 frame/s of {len(market.contracts)} symbols; {args.seconds:g} s each")
    print(f"daemon CPU, market feed off / on:        {cpu_off:6.2f} % / {cpu_on:6.2f} % of one core   "
          f"(goal on <= 15 %; with the feed's child process)")
    print(f"daemon RSS, market feed off / on:        {rss_off:6.1f} MB / {rss_on:6.1f} MB")
    print(f"mark-price freshness p50, off / on:      {lag_off:6.1f} ms / {lag_on:6.1f} ms   ({lag_on / lag_off:.2f}x; "
          f"goal within 1.10x; off with the kline fake sending as much to a bare reader)")
    print(f"  and off with the kline fake idle:        {lag_idle:6.1f} ms             ({lag_on / lag_idle:.2f}x: the "
          f"fakes' own load on this machine's {os.cpu_count()} cores included)")
    print(f"volume script klines weight per hour, rest / ws: {rest_scan * SCANS_PER_HOUR:6d} / "
          f"{ws_scan * SCANS_PER_HOUR:d}   (604 symbols today: 7,248; goal ws <= 100)")
    print("OI universe job 24 h volumes per hour, rest / ws:    480 / 0   (one ticker/24hr, weight 40, per 5 min; "
          "local tickers cost nothing)")
    print(f"heaviest REST minute at :00 (volume scan + OI universe + OI poller), rest / ws: "
          f"{rest_scan + 40 + OI_STEADY_PER_MIN} / {ws_scan + OI_STEADY_PER_MIN}   (Binance's limit 2,400)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
