"""Offline demo: the bundled fake exchange (WebSocket and REST), the real daemon and the real API, on loopback.

``python -m volspike_funding.demo`` — no internet needed. It prints where to look and a live line per second.
SIGTERM, SIGHUP and SIGINT (Ctrl-C, ``timeout``, ``kill``, a closed terminal) stop everything it started and remove
its temporary directory.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Sequence

from volspike_funding.core.errors import StateUnreadable
from volspike_funding.store.statefile import age_of, read_state

ROOT = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def port_problem(port: int) -> str | None:
    """Why the API could not bind ``127.0.0.1:port``, or ``None`` when it is free (checked before anything starts,
    so the answer names the flag instead of leaving a daemon without its API)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use (another API or demo?); choose another with --api-port PORT"
            return f"cannot bind 127.0.0.1:{port}: {exc.strerror}; choose another with --api-port PORT"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m volspike_funding.demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--api-port", type=int, default=8888, help="port of the demo API (default 8888)")
    parser.add_argument("--symbol", default="BTCUSDT", help="symbol shown in the live line")
    args = parser.parse_args(argv)
    if not 1 <= args.api_port <= 65535:
        parser.error(f"--api-port {args.api_port}: not a TCP port (1-65535)")
    try:
        from volspike_funding.fake.market import Market
        from volspike_funding.fake.rest_server import FakeBinanceRest
        from volspike_funding.fake.ws_server import FakeBinanceWS
    except ImportError:
        print("demo: the fake exchange needs the 'websockets' package: pip install -r requirements.txt",
              file=sys.stderr)
        return 2
    problem = port_problem(args.api_port)
    if problem:
        print(f"demo: error: {problem}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()  # the loop below notices within a second and cleans up

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    workdir = Path(tempfile.mkdtemp(prefix="volspike-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    market = Market()
    fake = FakeBinanceWS(market, cadence_s=1.0)
    rest = FakeBinanceRest(market)
    try:
        fake.start()
        rest.start()
        state = workdir / ".funding_state.json"
        # REST at the fake too: reference data (listings, funding intervals) is there, and nothing reaches out.
        env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": fake.url,
               "BINANCE_REST_URL": rest.url, "FUNDING_STATE_FILE": str(state),
               "FUNDING_API_PORT": str(args.api_port), "FUNDING_API_HOST": "127.0.0.1"}
        for name in ("binance_funding_ws_daemon.py", "funding_api_server.py"):
            # Their own session: a Ctrl-C in the terminal reaches the demo only, which stops them in order.
            procs.append(subprocess.Popen([sys.executable, str(ROOT / name)], env=env, start_new_session=True))
        print(f"demo: fake Binance at {fake.url} (REST {rest.url})\ndemo: state file {state}\n"
              f"demo: try  curl -s http://127.0.0.1:{args.api_port}/funding/{args.symbol}\n"
              f"      and  curl -s http://127.0.0.1:{args.api_port}/funding/health", flush=True)
        deadline = time.monotonic() + args.seconds if args.seconds else float("inf")
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if stop.wait(min(1.0, max(deadline - time.monotonic(), 0.0))):
                break
            try:
                snap = read_state(state)
            except StateUnreadable as exc:
                print(f"demo: waiting for the daemon ({exc.reason})", flush=True)
                continue
            record = snap.lookup(args.symbol) or {}
            age = age_of(record, time.time())
            print(f"demo: {len(snap.symbols)} symbols; {args.symbol} mark={record.get('markPrice')} "
                  f"funding={record.get('fundingRate')} age={'-' if age is None else f'{age:.2f}'} s; "
                  f"connected={snap.status.connected}", flush=True)
        failed = [p for p in procs if p.poll() not in (None, 0)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        rest.stop()
        fake.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed:
        print(f"demo: {len(failed)} process(es) exited early (exit {failed[0].returncode}); see above",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
