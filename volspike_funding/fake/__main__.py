"""The bundled fake Binance (WebSocket and REST) on fixed loopback ports, until SIGTERM or Ctrl-C.

``python -m volspike_funding.fake --ws-port 19443 --rest-port 19444``: for an offline check of a fresh install
(DEPLOYMENT.md, "Offline check of a fresh droplet"): point ``BINANCE_WS_URL`` and ``BINANCE_REST_URL`` at it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volspike_funding.fake", description=__doc__)
    parser.add_argument("--ws-port", type=int, default=19443, help="WebSocket port (default 19443)")
    parser.add_argument("--rest-port", type=int, default=19444, help="REST port (default 19444)")
    parser.add_argument("--cadence-s", type=float, default=1.0, help="seconds between frames (default 1, as Binance)")
    args = parser.parse_args(argv)
    from volspike_funding.fake.market import Market
    from volspike_funding.fake.rest_server import FakeBinanceRest
    from volspike_funding.fake.ws_server import FakeBinanceWS

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    market = Market()
    try:
        rest = FakeBinanceRest(market, port=args.rest_port)
        ws = FakeBinanceWS(market, cadence_s=args.cadence_s, port=args.ws_port).start()
    except OSError as exc:
        print(f"fake: error: cannot listen: {exc.strerror or exc} (choose --ws-port / --rest-port)", file=sys.stderr)
        return 1
    rest.start()
    print(f"fake: BINANCE_WS_URL={ws.url}\nfake: BINANCE_REST_URL={rest.url}", flush=True)
    try:
        stop.wait()
    finally:
        ws.stop()
        rest.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
