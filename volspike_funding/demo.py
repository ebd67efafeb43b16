"""Offline demo: the bundled fake exchange, the real daemon and the real API, wired together on loopback.

``python -m volspike_funding.demo`` — no internet needed. It prints where to look and a live line per second.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from volspike_funding.core.errors import StateUnreadable
from volspike_funding.store.statefile import age_of, read_state

ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volspike_funding.demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--api-port", type=int, default=8888, help="port of the demo API (default 8888)")
    parser.add_argument("--symbol", default="BTCUSDT", help="symbol shown in the live line")
    args = parser.parse_args(argv)
    try:
        from volspike_funding.fake.ws_server import FakeBinanceWS
    except ImportError:
        print("demo: the fake exchange needs the 'websockets' package: pip install -r requirements-dev.txt",
              file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="volspike-demo-"))
    state = workdir / ".funding_state.json"
    fake = FakeBinanceWS(cadence_s=1.0).start()
    env = {**os.environ, "VOLSPIKE_ENV_FILE": str(workdir / "none.env"), "BINANCE_WS_URL": fake.url,
           "FUNDING_STATE_FILE": str(state), "FUNDING_API_PORT": str(args.api_port),
           "FUNDING_API_HOST": "127.0.0.1"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / name)], env=env)
             for name in ("binance_funding_ws_daemon.py", "funding_api_server.py")
             if (ROOT / name).exists()]
    print(f"demo: fake Binance at {fake.url}\ndemo: state file {state}\n"
          f"demo: try  curl -s http://127.0.0.1:{args.api_port}/funding/{args.symbol}\n"
          f"      and  curl -s http://127.0.0.1:{args.api_port}/funding/health", flush=True)
    deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(1)
            try:
                snap = read_state(state)
            except StateUnreadable as exc:
                print(f"demo: waiting for the daemon ({exc.reason})", flush=True)
                continue
            record = snap.lookup(args.symbol) or {}
            age = age_of(record, time.time())
            print(f"demo: {len(snap.symbols)} symbols; {args.symbol} mark={record.get('markPrice')} "
                  f"funding={record.get('fundingRate')} age={'-' if age is None else f'{age:.2f}'} s; "
                  f"connected={snap.connection.get('connected')}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        fake.stop()
    return max((p.returncode or 0 for p in procs), default=0)


if __name__ == "__main__":
    sys.exit(main())
