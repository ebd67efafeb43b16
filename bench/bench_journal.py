"""Journal bytes per day of each unit (daemon, API, volume script, OI poller), every line counted (budget 20 MB).

Run: ``python -m bench.bench_journal [--seconds 120] [--symbols 600]``. The real programs run as processes at their
production settings (INFO, default intervals, validate mode), against the bundled fakes on loopback: Binance
WebSocket at one 700-symbol frame a second, Binance REST, a VolSpike backend whose liquid universe has
``--symbols`` symbols. Whatever a program writes to stdout and stderr is what the journal stores; each line is
counted with journald's ``date host unit[pid]:`` prefix.

- Daemon, API and OI poller run for ``--seconds``: the lines of their first ``--warmup`` seconds count once (start-up),
  the rest is extrapolated to a day. Lines that come every 5 minutes or more rarely (reference refreshes, universe
  publishing) show up only in a run at least that long; they are a few lines an hour.
- The volume script scans every 5 minutes: three ``--once`` scans (:05, :10, :30) are run, the mean scan's lines
  (its start banner excluded) times 288, plus one banner.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volspike_funding.fake.backend import FakeBackend  # noqa: E402
from volspike_funding.fake.http_fake import wait_until_serving  # noqa: E402
from volspike_funding.fake.market import Market  # noqa: E402
from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402

BUDGET_MB = 20.0
PREFIX = len("Nov 24 12:00:00 droplet binance-funding-ws[1234]: ")
STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),\d{3} ")
BANNER = ("env file:", "hourly volume alerts:", "backends:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def size(lines: list[str]) -> int:
    return sum(PREFIX + len(line.encode()) + 1 for line in lines)


def split_warmup(lines: list[str], started: float, warmup: float) -> tuple[list[str], list[str]]:
    """Lines of the first ``warmup`` seconds (by their own time stamp; unstamped ones follow the previous line)."""
    early, late, in_warmup = [], [], True
    for line in lines:
        match = STAMP.match(line)
        if match:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
            in_warmup = at < started + warmup
        (early if in_warmup else late).append(line)
    return early, late


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the long-running units run")
    parser.add_argument("--warmup", type=float, default=20.0, help="start-up seconds, counted once")
    parser.add_argument("--symbols", type=int, default=600, help="size of the backend's liquid universe")
    args = parser.parse_args(argv)
    if args.seconds <= args.warmup:
        parser.error("--seconds must exceed --warmup")
    market = Market()
    tmp = Path(tempfile.mkdtemp(prefix="bench-journal-"))
    # The volume script gets a REST fake of its own: its 700 klines at once would otherwise push the shared request
    # weight past 95 % and pause the OI poller, which then writes fewer lines than at its production rate.
    with FakeBinanceWS(market, cadence_s=1.0) as ws, FakeBinanceRest(market) as rest, \
            FakeBinanceRest(market) as volume_rest, FakeBackend("bench-key") as backend:
        backend.liquid_universe = sorted(market.contracts)[:args.symbols]
        # Binance's used weight is per minute; the fake only counts up, and every client would soon slow down.
        done = threading.Event()

        def new_minute() -> None:
            while not done.wait(60 - time.time() % 60):
                rest.used_weight = volume_rest.used_weight = 0

        threading.Thread(target=new_minute, daemon=True).start()
        port = free_port()
        # Production settings: nothing but where the peers are and where files go.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDING_", "BINANCE_", "VOLSPIKE_", "OI_"))}
        env.update({"VOLSPIKE_ENV_FILE": os.devnull, "PYTHONUNBUFFERED": "1", "BINANCE_WS_URL": ws.url,
                    "BINANCE_REST_URL": rest.url, "FUNDING_STATE_FILE": str(tmp / ".funding_state.json"),
                    "FUNDING_API_PORT": str(port), "WS_FUNDING_API_URL": f"http://127.0.0.1:{port}/funding",
                    "VOLSPIKE_API_URL": backend.url, "VOLSPIKE_API_KEY": "bench-key",
                    "VOLUME_ALERT_STATE_FILE": str(tmp / "volume.json"), "OI_STATE_FILE": str(tmp / "oi.json")})
        units = {"binance-funding-ws (daemon)": "binance_funding_ws_daemon.py",
                 "binance-funding-api (API)": "funding_api_server.py",
                 "volspike-oi-poller": "oi_realtime_poller.py"}
        procs, logs = {}, {}
        started = time.time()
        for name, script in units.items():
            logs[name] = tmp / f"{script}.log"
            with logs[name].open("w") as sink:
                procs[name] = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, stdout=sink,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
            if script == "funding_api_server.py":
                wait_until_serving(f"http://127.0.0.1:{port}/funding/health", 30)
        results: dict[str, tuple[int, float]] = {}
        try:
            # Meanwhile the volume script's scans, as its unit runs them (validate mode, both sides asked).
            scans = []
            hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
            for minute in (5, 10, 30):
                moment = hour + timedelta(minutes=minute, seconds=1)
                proc = subprocess.run([sys.executable, str(ROOT / "hourly_volume_alert_dual_env.py"), "--once",
                                       "--now", moment.strftime("%Y-%m-%dT%H:%M:%SZ")],
                                      env={**env, "BINANCE_REST_URL": volume_rest.url},
                                      capture_output=True, text=True, timeout=300, cwd=tmp)
                lines = (proc.stdout + proc.stderr).splitlines()
                banner = [x for x in lines if any(b in x for b in BANNER)]
                scans.append((size(lines) - size(banner), size(banner), len(lines) - len(banner)))
            per_scan = sum(s[0] for s in scans) / len(scans)
            lines_per_scan = sum(s[2] for s in scans) / len(scans)
            results["volspike-volume-alerts"] = (int(per_scan * 288 + scans[0][1]), lines_per_scan * 288)
            time.sleep(max(0.0, started + args.seconds - time.time()))
        finally:
            done.set()
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    print(f"{proc.args[1]} did not stop within 60 s of SIGTERM; killed", file=sys.stderr)
                    proc.kill()
                    proc.wait(10)
        for name in units:
            lines = logs[name].read_text(errors="replace").splitlines()
            early, late = split_warmup(lines, started, args.warmup)
            scale = 86400 / (args.seconds - args.warmup)
            results[name] = (int(size(early) + size(late) * scale), len(early) + len(late) * scale)
    worst = 0.0
    for name, (per_day, lines) in sorted(results.items()):
        mb = per_day / 1e6
        worst = max(worst, mb)
        print(f"{name:30s} {lines:>10,.0f} lines/day {mb:>8.2f} MB/day  {'ok' if mb <= BUDGET_MB else 'OVER'}")
    print(f"(budget {BUDGET_MB:g} MB/day per unit; {len(market.contracts)}-symbol frames at 1/s, "
          f"a {args.symbols}-symbol liquid universe, {args.seconds:g} s run, {args.warmup:g} s start-up counted once)")
    return 0 if worst <= BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
