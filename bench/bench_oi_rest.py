"""The OI poller's REST cost per loop: new connections to Binance, and funding weight with one stale symbol.

Run: ``python -m bench.bench_oi_rest``. Two measurements against loopback fakes that count what they receive:

1. **New connections per loop** after a warm-up loop, 341 symbols (the droplet's universe) on 20 fetch threads,
   every answer after 20 ms so the threads overlap: with requests' default pool (10 connections) and with the
   pool sized to the threads. The fake counts the TCP connections it accepts; urllib3's "Connection pool is
   full" warnings are counted too.
2. **Funding weight per hour with one stale symbol** in ``ws`` mode: the real daemon and API on a fake stream
   that never sends one symbol of the universe; REST weight per loop besides ``openInterest``, times the loops an
   hour at the interval the universe gets.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volspike_funding.api.server import ServerThread  # noqa: E402
from volspike_funding.binance.rest import BinanceRest  # noqa: E402
from volspike_funding.consumers.oi_poller import OiPoller, poll_interval  # noqa: E402
from volspike_funding.core.settings import load_settings  # noqa: E402
from volspike_funding.fake.backend import FakeBackend  # noqa: E402
from volspike_funding.fake.http_fake import wait_until_serving  # noqa: E402
from volspike_funding.fake.market import SILENT_SYMBOL, Market  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.feed.daemon import Daemon  # noqa: E402

N_SYMBOLS, CONCURRENCY, LOOPS = 341, 20, 5


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.full = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.full += "Connection pool is full" in record.getMessage()


def connections_per_loop(sized: bool) -> tuple[int, float, int]:
    market = Market(N_SYMBOLS + 2)
    counter = _Count()
    logging.getLogger("urllib3").addHandler(counter)
    with FakeBinanceRest(market) as rest:
        for name in market.contracts:
            rest.quote_volume_24h[name] = 1e8  # every perpetual is liquid: the universe is the market
        rest.latency_s["/fapi/v1/openInterest"] = 0.02
        tmp = Path(tempfile.mkdtemp(prefix="bench-oi-rest-"))
        settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "BINANCE_REST_URL": rest.url,
                                  "FUNDING_SOURCE_MODE": "rest", "OI_FETCH_CONCURRENCY": str(CONCURRENCY),
                                  "OI_STATE_FILE": str(tmp / "oi.json")})
        client = BinanceRest(rest.url, retries=0, pool_size=CONCURRENCY + 2 if sized else None)
        poller = OiPoller(settings, rest=client, backends=[], dry_run=True)
        poller.loop_once()  # warm-up
        warm, full_before = rest.connections, counter.full
        for _ in range(LOOPS):
            poller.loop_once()
        logging.getLogger("urllib3").removeHandler(counter)
        return warm, (rest.connections - warm) / LOOPS, (counter.full - full_before) // LOOPS


def funding_weight_per_hour() -> tuple[float, float, int]:
    market = Market(N_SYMBOLS + 10)
    tmp = Path(tempfile.mkdtemp(prefix="bench-oi-rest-"))
    with FakeBinanceWS(market, cadence_s=0.5) as ws, FakeBinanceRest(market) as rest, FakeBackend("k") as prod:
        env: dict[str, Any] = {"VOLSPIKE_ENV_FILE": str(tmp / "none"), "BINANCE_WS_URL": ws.url,
                               "FUNDING_STATE_FILE": str(tmp / "state" / "s.json"),
                               "FUNDING_REFERENCE_ENABLED": "false"}
        daemon_settings = load_settings(env)
        daemon_settings.state_file.parent.mkdir(parents=True, exist_ok=True)
        daemon = Daemon(daemon_settings)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        with ServerThread(daemon_settings) as api:
            wait_until_serving(api.url + "/funding/health")
            universe = sorted(market.contracts)[:N_SYMBOLS - 1] + [SILENT_SYMBOL]  # one never on the stream
            prod.liquid_universe = universe
            settings = load_settings({**env, "BINANCE_REST_URL": rest.url, "FUNDING_SOURCE_MODE": "ws",
                                      "WS_FUNDING_API_URL": api.url + "/funding", "VOLSPIKE_API_URL": prod.url,
                                      "VOLSPIKE_API_KEY": "k", "OI_UNIVERSE_PUBLISH_S": "0",
                                      "OI_STATE_FILE": str(tmp / "oi.json")})
            poller = OiPoller(settings, rest=BinanceRest(rest.url, retries=0), dry_run=True)
            poller.loop_once()
            requests_before = len(rest.requests)
            interval = 0.0
            for _ in range(LOOPS):
                interval = poller.loop_once()
            funding = [r for r in rest.requests[requests_before:] if r.path == "/fapi/v1/premiumIndex"]
            weight = sum(1 if "symbol" in r.query else 10 for r in funding) / LOOPS
        daemon.request_stop()
        thread.join(10)
    return weight, weight * 3600 / interval, len(universe)


def main() -> int:
    for sized in (False, True):
        warm, per_loop, full = connections_per_loop(sized)
        label = f"pool sized to {CONCURRENCY + 2}" if sized else "default pool of 10"
        print(f"{label:>20}: {warm} connections in the warm-up loop, then {per_loop:.1f} new per loop, "
              f"{full} 'Connection pool is full' per loop ({N_SYMBOLS} symbols, {CONCURRENCY} threads)")
    weight, per_hour, n = funding_weight_per_hour()
    interval, _ = poll_interval(n, 2000, 5, 20)
    print(f"ws mode, {n} symbols, one stale: funding REST weight {weight:.0f} per loop, {per_hour:.0f} per hour "
          f"(a loop every {interval:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
