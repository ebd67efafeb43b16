"""Validate-mode journal volume per consumer and day (budget: <= 20 MB), and the report's verdict on it.

Run: ``python -m bench.bench_log_volume [--symbols 600] [--loop-s 5] [--hours 1]``. The real ComparisonLog writes a
simulated OI poller's comparisons (600 symbols every 5 s; mark prices within a few 1e-5 of REST, now and then a
mismatch) under a simulated clock; bytes are counted as journald stores the message plus a typical
``date host unit[pid]:`` prefix, and extrapolated to a day. The same comparisons in the earlier
one-line-per-comparison format are measured side by side, and the report reads both.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.report.test_report import SUMMARY_MARKER, old_format  # noqa: E402
from volspike_funding.store.comparison_log import FUNDING, MARK, ComparisonLog  # noqa: E402
from volspike_funding.report.funding_report import Report, feed_all  # noqa: E402
from volspike_funding.core.settings import load_settings  # noqa: E402

PREFIX = len("Nov 24 12:00:00 droplet oi_realtime_poller.py[1234]: 2026-11-24 12:00:00,000 INFO funding.compare: ")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def simulate(symbols: int, loop_s: float, hours: float) -> tuple[list[str], list[str]]:
    rng = random.Random(1)
    clock = {"t": datetime(2026, 11, 24, tzinfo=timezone.utc).timestamp()}
    logger = logging.getLogger("bench.log_volume")
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    log = ComparisonLog("oi_poller", funding_abs_tolerance=1e-5, price_rel_tolerance=1e-3, logger=logger,
                        clock=lambda: clock["t"])
    old: list[str] = []
    names = [f"SYM{i:03d}USDT" for i in range(symbols)]
    for _ in range(int(hours * 3600 / loop_s)):
        done = []
        for i, name in enumerate(names):
            rate = (i % 17 - 8) * 1e-5
            done.append(log.compare(name, FUNDING, rate, rate, rng.uniform(0.1, 1.0)))
            price = 1.0 + i
            noise = rng.gauss(0, 3e-5) if rng.random() > 0.0005 else 0.003  # a rare real mismatch
            done.append(log.compare(name, MARK, price, price * (1 + noise), rng.uniform(0.1, 1.0)))
        log.summary("validate", done, ws_available=True, rest_available=True)
        old.extend(old_format(c, "oi_poller") for c in done)
        old.append(SUMMARY_MARKER + '{"ts": %.3f, "consumer": "oi_poller", "comparisons": %d, "matches": %d, '
                   '"wsAvailable": true, "restAvailable": true}' % (clock["t"], len(done), sum(c.match for c in done)))
        clock["t"] += loop_s
    log.flush()
    return handler.lines, old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=600)
    parser.add_argument("--loop-s", type=float, default=5.0)
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args(argv)
    new, old = simulate(args.symbols, args.loop_s, args.hours)
    per_day = 24 / args.hours
    settings = load_settings({"VOLSPIKE_ENV_FILE": "/nonexistent", "REPORT_MIN_HOURS": str(args.hours * 0.9)})
    for label, lines in (("window lines (now)", new), ("a line per comparison (before)", old)):
        size = sum(len(line) + PREFIX + 1 for line in lines) * per_day
        result = feed_all(Report(settings), lines).as_dict()
        mark = result["fields"][MARK]
        print(f"{label:32s}: {len(lines) * per_day:>12,.0f} lines/day, {size / 1e6:>9,.1f} MB/day; verdict "
              f"{result['verdict']}, mark match {100 * mark['matchRate']:.3f} %, p99 rel "
              f"{mark['relDiff']['p99']:.3g}")
    print(f"(budget <= 20 MB/day per consumer; {args.symbols} symbols, a loop every {args.loop_s:g} s, "
          f"{args.hours:g} h simulated and extrapolated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
