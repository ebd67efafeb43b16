"""The OI poll loop at a droplet's REST latency: does one loop finish within its interval, within the weight budget?

Run: ``python -m bench.bench_oi_latency``. The real poller (``rest`` funding mode, universe computed locally)
against the fake Binance REST answering every call after 250 ms (from a droplet: 150-300 ms), for the production
universe sizes (341 symbols measured on the droplet, 600 as headroom), with ``OI_FETCH_CONCURRENCY`` 8 (the old
default: 341 symbols took ~13 s against a 10 s interval) beside 20 (the original scripts' thread count, the new
default).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volspike_funding.binance.rest import BinanceRest  # noqa: E402
from volspike_funding.fake.market import Market  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.consumers.oi_poller import OiPoller, poll_interval  # noqa: E402
from volspike_funding.core.settings import load_settings  # noqa: E402

LATENCY_S = 0.25


def loop_time(n: int, concurrency: int) -> tuple[float, float, int]:
    market = Market(n + 2)
    with FakeBinanceRest(market) as rest:
        for name in market.contracts:
            rest.quote_volume_24h[name] = 1e8  # every perpetual is liquid: the universe is the market
        rest.latency_s["*"] = LATENCY_S
        tmp = Path(tempfile.mkdtemp(prefix="bench-oi-"))
        settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "BINANCE_REST_URL": rest.url,
                                  "FUNDING_SOURCE_MODE": "rest", "OI_FETCH_CONCURRENCY": str(concurrency),
                                  "OI_STATE_FILE": str(tmp / "oi.json")})
        poller = OiPoller(settings, rest=BinanceRest(rest.url, retries=0), backends=[], dry_run=True)
        poller.universe.refresh()
        symbols = len(poller.universe.symbols)
        before = rest.total_weight
        started = time.monotonic()
        interval = poller.loop_once()
        took = time.monotonic() - started
        return took, interval, rest.total_weight - before if symbols else 0


def main() -> int:
    for n in (341, 600):
        interval, _ = poll_interval(n, 2000, 5, 20)
        for concurrency in (8, 20):
            took, _, weight = loop_time(n, concurrency)
            verdict = "keeps up" if took <= interval else "FALLS BEHIND"
            print(f"{n} symbols, concurrency {concurrency:2d}: one loop {took:5.1f} s, interval {interval:4.0f} s "
                  f"({verdict}); weight {weight} per loop = {weight * 60 / interval:.0f}/min of 2400")
    print(f"(every REST answer delayed {LATENCY_S * 1000:.0f} ms, as from a droplet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
