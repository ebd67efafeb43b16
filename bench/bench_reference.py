"""The daemon's Binance REST weight per hour (budget: <= 30), measured on the fake exchange with time compressed.

Run: ``python -m bench.bench_reference [--scale 200] [--hours 3]``. The daemon runs as in production (a real
process, the 2026 wire, reference data on) with ``FUNDING_REFERENCE_REFRESH_S`` and ``FUNDING_INTEREST_REFRESH_S``
divided by ``--scale``; the fake REST counts weight as Binance does. A second run restarts the daemon every scaled
10 minutes, to show that restarts cost no weight. Early exchangeInfo refreshes (a symbol on the stream that our
copy does not list) are not time-compressed: the worst case, a symbol exchangeInfo never lists, is computed from
the schedule and printed (+10 in its first hour, +6 an hour after).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volspike_funding.fake.market import Market  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.core.retry import Backoff  # noqa: E402
from volspike_funding.feed.reference_fetch import EARLY_BASE_SHARE, EARLY_CAP_SHARE  # noqa: E402


def run(scale: float, hours: float, restart_every_s: float | None) -> tuple[int, dict[str, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    market = Market(700)
    with FakeBinanceWS(market, cadence_s=1.0) as ws, FakeBinanceRest(market) as rest:
        env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": ws.url,
               "BINANCE_REST_URL": rest.url, "FUNDING_STATE_FILE": str(tmp / "state.json"),
               "FUNDING_LOG_LEVEL": "WARNING", "FUNDING_REFERENCE_REFRESH_S": str(900 / scale),
               "FUNDING_INTEREST_REFRESH_S": str(3600 / scale)}
        duration = hours * 3600 / scale
        end = time.monotonic() + duration
        while time.monotonic() < end:
            proc = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py")], env=env)
            try:
                time.sleep(min(restart_every_s or duration, max(0.0, end - time.monotonic())))
            finally:
                proc.terminate()
                proc.wait(10)
        return rest.total_weight, dict(rest.counts)


def early_refreshes_first_hour(refresh_s: float) -> int:
    """Early exchangeInfo refreshes in the first hour of a symbol the stream sends and exchangeInfo never lists: at
    once, then after a wait doubling from 1/30 to 2/3 of the interval (steady state: 3600 / (2/3 interval))."""
    waits = Backoff(refresh_s * EARLY_BASE_SHARE, refresh_s * EARLY_CAP_SHARE)
    t, n = 0.0, 0
    while t < 3600:
        n += 1
        t += waits.ceiling(n)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=200, help="time compression (1 h lasts 3600/scale s)")
    parser.add_argument("--hours", type=float, default=3, help="scaled hours to run")
    args = parser.parse_args(argv)
    weight, counts = run(args.scale, args.hours, None)
    per_hour = weight / args.hours
    early = early_refreshes_first_hour(900.0)  # a symbol exchangeInfo never lists, at the production interval
    print(f"steady run, {args.hours:g} scaled hours ({args.hours * 3600 / args.scale:.0f} s): {weight} weight, "
          f"{per_hour:.1f} per hour; requests {counts}")
    print(f"  worst case with early exchangeInfo refreshes (+{early:.0f}/h): {per_hour + early:.1f} per hour   "
          f"(budget <= 30)")
    weight, counts = run(args.scale, args.hours, 600 / args.scale)
    print(f"restarting every scaled 10 min: {weight} weight, {weight / args.hours:.1f} per hour "
          f"(a restart spends nothing that is not due)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
