"""``oi_realtime_poller.py``: open interest of the liquid universe, priced with local mark prices, to VolSpike.

Each loop: one local ``/funding/batch`` (plus one bulk REST premiumIndex in ``validate`` mode), then
``openInterest`` for every symbol through the shared rate-limited client, then samples and alerts are queued for
the backends. Each backend has its own outbox (queue and thread, oldest dropped when full), so a slow backend
delays neither the next poll nor the other backend. ``openInterestUsd = openInterest × markPrice`` only with a
known, fresh mark price; rows with open interest <= 0 are not posted.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Any, Sequence

from volspike_funding.consumers.sinks import (ACCEPTED, REJECTED, UNCERTAIN, Backend, Outbox, backends_from,
                                              report_status)
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.core.cli import EXIT_FAILURE, build_parser, env_file_line, run, settings_from_args
from volspike_funding.core.logs import setup_logging
from volspike_funding.core.errors import RestError
from volspike_funding.consumers.market_source import LocalMarketClient
from volspike_funding.consumers.funding_source import FundingSource
from volspike_funding.consumers.oi_alerts import OiAlert, OiAlertEngine, Sample
from volspike_funding.consumers.oi_universe import Universe
from volspike_funding.consumers.shutdown import interruptible_sleep, map_daemon, run_until_stopped
from volspike_funding.core.settings import CONSUMER, OI, Settings, secret_values
from volspike_funding.core.timefmt import iso_z

log = logging.getLogger("oi.poller")
CHUNK = 100
UNIVERSE_UPDATE = "/api/market/open-interest/liquid-universe/update"
STATUS_EVERY = 10
EMPTY_RETRY_S = 30.0
#: ``--once`` waits this long for its deliveries before exiting.
ONCE_DRAIN_S = 90.0


def poll_interval(n: int, max_per_min: float, lo: float, hi: float) -> tuple[float, bool]:
    """``clamp(round(60·n / max_per_min), lo, hi)``, rounded up where rounding would break the request budget, and
    stretched past ``hi`` when the budget needs it (then flagged)."""
    needed = 60 * n / max_per_min
    interval = float(min(max(round(needed), lo), hi))
    if needed > interval:
        interval = float(math.ceil(needed))
    return interval, interval > hi


class OiPoller:
    def __init__(self, settings: Settings, *, rest: BinanceRest | None = None,
                 backends: list[Backend] | None = None, dry_run: bool = False, publish: bool = True,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        #: Set by SIGTERM: the rate pacer's and backoff sleeps end at once, fetches not started are skipped.
        self.stop = stop or threading.Event()
        # The pool holds a connection for every fetch thread, plus the loop's and the universe thread's calls.
        self.rest = rest or BinanceRest(settings.binance_rest_url, timeout=settings.binance_rest_timeout_s,
                                        retries=settings.binance_rest_retries,
                                        pool_size=settings.oi_fetch_concurrency + 2,
                                        sleep=interruptible_sleep(self.stop))
        self.source = FundingSource(settings, self.rest, "oi_poller")
        self.backends = backends_from(settings) if backends is None else backends
        local = None if self.source.mode == "rest" else LocalMarketClient.for_settings(settings).quote_volumes
        self.universe = Universe(settings, self.rest, self.backends[0] if self.backends else None,
                                 exchange_info=self.source.exchange_info, local_volumes=local)
        self.engine = OiAlertEngine(settings, [b.name for b in self.backends], persist=not dry_run)
        self.outboxes = {b.name: Outbox(b.name, settings.oi_post_queue_max) for b in self.backends}
        self.dry_run = dry_run
        #: Where the liquid universe is published: PROD, and DEV only when asked (an update replaces a table).
        self.publish_to = [b for b in self.backends
                           if publish and (b.name == "PROD" or settings.oi_universe_publish_dev)]
        #: Universe refreshes and publications run here while a universe is known, so a hung backend's GET never
        #: delays a loop (and with it the other backend's samples).
        self._universe_thread: threading.Thread | None = None
        self.loops = 0
        #: Rows of the last loop (``--once`` fails when it got none at all).
        self.last_rows = 0
        self._warned_budget = False

    def banner(self) -> None:
        s = self.settings
        log.info("OI poller: funding %s; universe from %s; budget %g req/min, interval %g-%g s",
                 self.source.describe(), ("computed, published to " + ",".join(b.name for b in self.publish_to))
                 if self.publish_to and s.oi_universe_publish_s else "the backend" if self.backends
                 else "exchangeInfo + ticker/24hr",
                 s.oi_max_req_per_min, s.oi_min_interval_sec, s.oi_max_interval_sec)
        log.info("thresholds: 5 min %g, 15 min %g, 1 h %g (lookbacks %g/%g/%g s), min delta %g contracts; "
                 "excluded %s; backends: %s%s",
                 s.oi_spike_threshold_pct_5min, s.oi_spike_threshold_pct_15min, s.oi_spike_threshold_pct_60min,
                 s.oi_lookback_window_5min, s.oi_lookback_window_15min, s.oi_lookback_window_60min,
                 s.oi_min_delta_contracts, ",".join(s.oi_excluded_symbols) or "none",
                 ", ".join(map(repr, self.backends)) or "none", "; DRY RUN" if self.dry_run else "")

    def _fetch(self, symbol: str) -> tuple[str, float | None, float]:
        try:
            value = float(self.rest.open_interest(symbol)["openInterest"])
            return symbol, value if math.isfinite(value) and value >= 0 else None, time.time()
        except (RestError, KeyError, TypeError, ValueError) as exc:
            log.debug("%s openInterest failed: %s", symbol, exc)
            return symbol, None, time.time()

    def publish_universe(self) -> None:
        """Compute the liquid universe, send it to PROD (and DEV when configured) from their outboxes, poll it."""
        body = self.universe.publication(iso_z(datetime.now(timezone.utc)))
        if body is None or self.dry_run:
            if body is not None:
                log.info("DRY RUN: would publish a liquid universe of %d symbols", len(body["symbols"]))
            return
        for backend in self.publish_to:
            self.outboxes[backend.name].put(functools.partial(
                backend.post, UNIVERSE_UPDATE, body, what=f"liquid universe, {len(body['symbols'])} symbols"))
        self.universe.adopt([item["symbol"] for item in body["symbols"]])

    def _universe_work(self) -> None:
        if self.publish_to and self.universe.publish_due():
            self.publish_universe()
        if self.universe.due():
            self.universe.refresh()

    def _universe_due(self) -> bool:
        return bool(self.publish_to and self.universe.publish_due()) or self.universe.due()

    def loop_once(self) -> float:
        """One poll; returns the interval to keep until the next one starts."""
        if not self.universe.symbols:
            self._universe_work()  # nothing to poll without one: this loop waits for it
        elif self._universe_due() and not (self._universe_thread and self._universe_thread.is_alive()):
            self._universe_thread = threading.Thread(target=self._universe_work, name="oi-universe", daemon=True)
            self._universe_thread.start()
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
        fetched = [f for f in map_daemon(self._fetch, symbols, s.oi_fetch_concurrency, self.stop) if f is not None]
        if self.stop.is_set():
            return interval  # a partial loop after a stop: nothing of it is queued
        rows, alerts = [], []
        excluded = set(s.oi_excluded_symbols)
        for symbol, oi, at in fetched:
            if oi is None or oi <= 0:
                continue
            quote = quotes[symbol]
            row: dict[str, Any] = {"symbol": symbol, "openInterest": oi}
            if quote.mark_price is not None:
                row.update(openInterestUsd=oi * quote.mark_price, markPrice=quote.mark_price)
            rows.append(row)
            if symbol not in excluded:  # posted like any symbol, never alerted on: no alert history needed
                alerts += self.engine.observe(symbol, Sample(at, oi, quote.mark_price), quote.funding_rate)
        self._queue(rows, alerts)
        self.loops += 1
        self.last_rows = len(rows)
        report_status(self.settings.oi_state_file, "oi_poller", self.rest, self.backends,
                               self.outboxes.values())
        if self.loops % STATUS_EVERY == 1:
            log.info("loop %d: %d/%d symbols in %.2f s, %d priced in USD, %d alerts, %d posted, %d dropped; "
                     "interval %.0f s", self.loops, len(rows), len(symbols), time.monotonic() - started,
                     sum("markPrice" in r for r in rows), len(alerts), sum(o.done for o in self.outboxes.values()),
                     sum(o.dropped for o in self.outboxes.values()),
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
            self.outboxes[backend.name].put(functools.partial(self._post_samples, backend, rows, stamp))
        by_name = {b.name: b for b in self.backends}
        for alert in alerts:
            self.outboxes[alert.backend].put(functools.partial(self._post_alert, by_name[alert.backend], alert),
                                             on_drop=functools.partial(self.engine.confirm, alert, False))

    def _post_samples(self, backend: Backend, rows: list[dict[str, Any]], stamp: str) -> None:
        """One loop's samples, in chunks; each chunk is sent at most once (a timed-out chunk is not re-sent)."""
        accepted = uncertain = 0
        for i in range(0, len(rows), CHUNK):
            data = rows[i:i + CHUNK]
            chunk = {"data": data, "timestamp": stamp, "totalSymbols": len(rows), "source": "realtime"}
            outcome = backend.post("/api/market/open-interest/ingest", chunk, timeout=backend.batch_timeout)
            accepted += len(data) if outcome == ACCEPTED else 0
            uncertain += len(data) if outcome == UNCERTAIN else 0
        # "posted to" is what operators grep as confirmation: only for rows the backend acknowledged.
        if accepted:
            log.info("posted to %s: OI samples, %d of %d rows", backend.name, accepted, len(rows))
        if uncertain:
            log.warning("may have reached %s: OI samples, %d of %d rows (no answer in time, or a 5xx after the body "
                        "was sent); not re-sent", backend.name, uncertain, len(rows))

    def _post_alert(self, backend: Backend, alert: OiAlert) -> None:
        outcome = backend.post("/api/open-interest-alerts/ingest", alert.payload,
                               what=f"OI alert {alert.symbol} {alert.direction} [{alert.timeframe.label}]")
        # Uncertain counts as delivered: it may be stored, and an alert is never sent twice.
        self.engine.confirm(alert, outcome != REJECTED)

    def run(self, stop: threading.Event, once: bool = False, close: bool = True) -> None:
        """Loop until ``stop``; ``close=False`` leaves the outboxes to the caller (a bounded stop)."""
        try:
            while not stop.is_set():
                started = time.monotonic()
                interval = self.loop_once()
                if once:
                    break
                stop.wait(max(0.0, started + interval - time.monotonic()))
        finally:
            self.source.comparisons.flush()  # the last window's line, so no validation is lost at a stop
            for outbox in self.outboxes.values() if close else ():
                outbox.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("oi_realtime_poller", "Open interest of the liquid universe, priced in USD, to VolSpike.",
                          CONSUMER, OI, exit_codes="exit codes: 0 stopped on request (SIGTERM, SIGINT) or --once "
                                                   "done; 1 failed (logged), or --once fetched no open interest at "
                                                   "all; 2 bad settings or usage.")
    parser.add_argument("--once", action="store_true",
                        help="run one loop, then exit; exit code 1 when it got no open interest at all")
    parser.add_argument("--dry-run", action="store_true", help="poll and log, post nothing")
    parser.add_argument("--publish-universe", action="store_true",
                        help="with --once: also publish the liquid universe (a service run always does)")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, CONSUMER, OI)
        setup_logging(settings.log_level, secret_values(settings))
        log.info("%s", env_file_line(args))
        stop = threading.Event()
        poller = OiPoller(settings, dry_run=args.dry_run, publish=args.publish_universe or not args.once, stop=stop)
        poller.banner()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        if run_until_stopped(functools.partial(poller.run, stop, once=args.once, close=False), stop,
                             poller.outboxes.values(), drain_s=ONCE_DRAIN_S):
            poller.source.comparisons.flush()  # the loop's thread may still be in a request: flushed from here
            return 0
        if args.once and not poller.last_rows:
            # A cron job or a smoke test must see a run that fetched nothing as a failure, not as success.
            log.error("--once got no open interest at all (universe, Binance or the network unavailable?)")
            return EXIT_FAILURE
        return 0

    return run("oi_realtime_poller", body)
