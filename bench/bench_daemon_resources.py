"""Daemon CPU % of one core and RSS at the real cadence (1 frame/s of 700 symbols), against the fake exchange.

Run: ``python -m bench.bench_daemon_resources [--seconds 60]``. Targets: <= 0.5 % of a core, <= 40 MB RSS.
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

from volspike_funding.fake.rest_server import FakeBinanceRest  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    # Today's wire and reference data on, as in production: COIN-M rows to skip, per-symbol streams to follow.
    with FakeBinanceWS(cadence_s=1.0) as fake, FakeBinanceRest(fake.market) as rest:
        env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_WS_URL": fake.url,
               "BINANCE_REST_URL": rest.url,
               "FUNDING_STATE_FILE": str(tmp / "state.json"), "FUNDING_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py")], env=env)
        try:
            time.sleep(5)  # start-up (imports, first connection) is not the steady state
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1)
                peak = max(peak, rss_mb(proc.pid))
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        finally:
            proc.terminate()
            proc.wait(10)
        frames = fake.stats["frames_sent"]
    print(f"steady state over {args.seconds:.0f} s, {frames} frames of 700 symbols sent")
    print(f"daemon CPU: {cpu:.2f} % of one core   (target <= 0.5 %)")
    print(f"daemon peak RSS: {peak:.1f} MB       (target <= 40 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
