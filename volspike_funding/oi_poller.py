"""``oi_realtime_poller.py``: open interest of the liquid universe, priced with local mark prices, to VolSpike.

Each loop: one local ``/funding/batch`` (plus one bulk REST premiumIndex in ``validate`` mode), then
``openInterest`` for every symbol through the shared rate-limited client, then samples and alerts are queued for
the backends. Posting runs on its own thread from a bounded queue (oldest dropped, logged), so a slow backend
never delays the next poll. ``openInterestUsd = openInterest × markPrice`` only with a known, fresh mark price.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from .alert_sinks import Backend, backends_from
from .binance_rest import BinanceRest
from .cli import build_parser, run, settings_from_args, setup_logging
from .errors import RestError
from .funding_source import FundingSource
from .oi_alerts import OiAlert, OiAlertEngine, Sample
from .oi_universe import Universe
from .settings import CONSUMER, OI, Settings, secret_values
from .volume_rules import iso_z

log = logging.getLogger("oi.poller")
CHUNK = 100
STATUS_EVERY = 10
EMPTY_RETRY_S = 30.0


def poll_interval(n: int, max_per_min: float, lo: float, hi: float) -> tuple[float, bool]:
    """``clamp(round(60·n / max_per_min), lo, hi)``, stretched past ``hi`` when the budget needs it (flagged)."""
    interval = min(max(round(60 * n / max_per_min), lo), hi)
    needed = 60 * n / max_per_min
    return (float(math.ceil(needed)), True) if needed > interval else (float(interval), False)


class Sender:
    """Posts from a bounded queue on its own thread; ``on_done(accepted)`` reports each job's outcome."""

    def __init__(self, maxlen: int) -> None:
        self._jobs: deque[tuple[Backend, str, dict[str, Any], Callable[[bool], None] | None]] = deque()
        self._maxlen = maxlen
        self._cv = threading.Condition()
        self._stop = False
        self.posted = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="oi-sender", daemon=True)
        self._thread.start()

    def put(self, backend: Backend, path: str, payload: dict[str, Any],
            on_done: Callable[[bool], None] | None = None) -> None:
        with self._cv:
            if len(self._jobs) >= self._maxlen:
                old_backend, old_path, _, old_done = self._jobs.popleft()
                self.dropped += 1
                log.warning("%s is slow: dropped the oldest queued POST %s", old_backend.name, old_path)
                if old_done is not None:
                    old_done(False)
            self._jobs.append((backend, path, payload, on_done))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if not self._jobs:
                    return
                backend, path, payload, on_done = self._jobs.popleft()
            accepted = backend.post(path, payload)
            self.posted += accepted
            if on_done is not None:
                on_done(accepted)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to ``timeout``), then stop."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)


class OiPoller:
    def __init__(self, settings: Settings, *, rest: BinanceRest | None = None,
                 backends: list[Backend] | None = None, dry_run: bool = False) -> None:
        self.settings = settings
        self.rest = rest or BinanceRest(settings.binance_rest_url, timeout=settings.binance_rest_timeout_s,
                                        retries=settings.binance_rest_retries)
        self.source = FundingSource(settings, self.rest, "oi_poller")
        self.backends = backends_from(settings) if backends is None else backends
        self.universe = Universe(settings, self.rest, self.backends[0] if self.backends else None,
                                 exchange_info=self.source.exchange_info)
        self.engine = OiAlertEngine(settings, [b.name for b in self.backends])
        self.sender = Sender(settings.oi_post_queue_max)
        self.dry_run = dry_run
        self.loops = 0
        self._warned_budget = False

    def banner(self) -> None:
        s = self.settings
        log.info("OI poller: funding %s; universe from %s; budget %g req/min, interval %g-%g s",
                 self.source.describe(), "the backend" if self.backends else "exchangeInfo + ticker/24hr",
                 s.oi_max_req_per_min, s.oi_min_interval_sec, s.oi_max_interval_sec)
        log.info("thresholds: 5 min %g, 15 min %g, 1 h %g, min delta %g contracts; excluded %s; backends: %s%s",
                 s.oi_spike_threshold_pct_5min, s.oi_spike_threshold_pct_15min, s.oi_spike_threshold_pct_60min,
                 s.oi_min_delta_contracts, ",".join(s.oi_excluded_symbols) or "none",
                 ", ".join(map(repr, self.backends)) or "none", "; DRY RUN" if self.dry_run else "")

    def _fetch(self, symbol: str) -> tuple[str, float | None, float]:
        try:
            value = float(self.rest.open_interest(symbol)["openInterest"])
            return symbol, value if math.isfinite(value) and value >= 0 else None, time.time()
        except (RestError, KeyError, TypeError, ValueError) as exc:
            log.debug("%s openInterest failed: %s", symbol, exc)
            return symbol, None, time.time()

    def loop_once(self) -> float:
        """One poll; returns the interval to keep until the next one starts."""
        if self.universe.due():
            self.universe.refresh()
        symbols = self.universe.symbols
        if not symbols:
            log.warning("universe is empty (backend and Binance unavailable?); retrying in %.0f s", EMPTY_RETRY_S)
            return EMPTY_RETRY_S
        s = self.settings
        interval, over = poll_interval(len(symbols), s.oi_max_req_per_min, s.oi_min_interval_sec,
                                       s.oi_max_interval_sec)
        if over and not self._warned_budget:
            self._warned_budget = True
            log.warning("%d symbols need %.0f s per loop to stay within %g req/min: OI_MAX_INTERVAL_SEC (%g s) is "
                        "exceeded", len(symbols), interval, s.oi_max_req_per_min, s.oi_max_interval_sec)
        started = time.monotonic()
        quotes = self.source.quotes(symbols)
        with ThreadPoolExecutor(s.oi_fetch_concurrency, thread_name_prefix="oi") as pool:
            fetched = list(pool.map(self._fetch, symbols))
        rows, alerts = [], []
        for symbol, oi, at in fetched:
            if oi is None:
                continue
            quote = quotes[symbol]
            row: dict[str, Any] = {"symbol": symbol, "openInterest": oi}
            if quote.mark_price is not None:
                row.update(openInterestUsd=oi * quote.mark_price, markPrice=quote.mark_price)
            rows.append(row)
            alerts += self.engine.observe(symbol, Sample(at, oi, quote.mark_price), quote.funding_rate)
        self._queue(rows, alerts)
        self.loops += 1
        if self.loops % STATUS_EVERY == 1:
            log.info("loop %d: %d/%d symbols in %.2f s, %d priced in USD, %d alerts, %d posted, %d dropped; "
                     "interval %.0f s", self.loops, len(rows), len(symbols), time.monotonic() - started,
                     sum("markPrice" in r for r in rows), len(alerts), self.sender.posted, self.sender.dropped,
                     interval)
        return interval

    def _queue(self, rows: list[dict[str, Any]], alerts: list[OiAlert]) -> None:
        stamp = iso_z(datetime.now(timezone.utc))
        for alert in alerts:
            log.warning("OI %s %s %s: %+.2f%% (%s -> %s)", alert.timeframe.label, alert.symbol, alert.direction,
                        100 * alert.payload["pctChange"], alert.payload["baseline"], alert.payload["current"])
        if self.dry_run:
            for alert in alerts:
                self.engine.confirm(alert, False)
            return
        for backend in self.backends:
            for i in range(0, len(rows), CHUNK):
                self.sender.put(backend, "/api/market/open-interest/ingest",
                                {"data": rows[i:i + CHUNK], "timestamp": stamp, "totalSymbols": len(rows),
                                 "source": "realtime"})
        by_name = {b.name: b for b in self.backends}
        for alert in alerts:
            self.sender.put(by_name[alert.backend], "/api/open-interest-alerts/ingest", alert.payload,
                            functools.partial(self.engine.confirm, alert))

    def run(self, stop: threading.Event, once: bool = False) -> None:
        try:
            while not stop.is_set():
                started = time.monotonic()
                interval = self.loop_once()
                if once:
                    break
                stop.wait(max(0.0, started + interval - time.monotonic()))
        finally:
            self.sender.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("oi_realtime_poller", "Open interest of the liquid universe, priced in USD, to VolSpike.",
                          CONSUMER, OI)
    parser.add_argument("--once", action="store_true", help="run one loop, then exit")
    parser.add_argument("--dry-run", action="store_true", help="poll and log, post nothing")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, CONSUMER, OI)
        setup_logging(settings.log_level, secret_values(settings))
        poller = OiPoller(settings, dry_run=args.dry_run)
        poller.banner()
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        poller.run(stop, once=args.once)
        return 0

    return run("oi_realtime_poller", body)
