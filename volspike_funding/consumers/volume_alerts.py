"""``hourly_volume_alert_dual_env.py``: hourly volume-spike alerts to Telegram and the PROD/DEV backends.

Funding rates come from :class:`.funding_source.FundingSource` (local API first, REST alongside for validation).
The rules live in :mod:`.volume_rules`; this module fetches, decides, sends and keeps the 5-minute schedule.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from volspike_funding.consumers.shutdown import interruptible_sleep, map_daemon, run_until_stopped
from volspike_funding.consumers.sinks import Backend, Outbox, Telegram, backends_from, report_status
from volspike_funding.binance.rest import BinanceRest, usdt_perpetuals
from volspike_funding.core.cli import EXIT_FAILURE, build_parser, env_file_line, run, settings_from_args
from volspike_funding.core.logs import setup_logging
from volspike_funding.core.timefmt import iso_z
from volspike_funding.core.errors import RateLimited, RestError, SettingsError
from volspike_funding.consumers.market_source import LocalMarketClient, compare_candles
from volspike_funding.consumers.funding_source import LOCAL_EXCHANGE_INFO_MAX_AGE_S, UNKNOWN, FundingSource, Quote
from volspike_funding.core.settings import ALERTS, CONSUMER, Settings, secret_values
from volspike_funding.core.value_parsers import iso_time
from volspike_funding.store import consumer_status
from volspike_funding.consumers.volume_rules import (SLOT, SPIKE, AlertBook, Candles, alert_text, asset_of, fmt_volume, is_spike,
                           klines_limit, pick_candles, slot_of)

log = logging.getLogger("volume_alerts")
UNIVERSE_TTL_S = 3600.0
#: Deliveries queued per receiver before the oldest is dropped (a scan sends a handful; this is a hung receiver).
OUTBOX_MAX = 200
#: ``--once`` waits this long for its deliveries before exiting.
ONCE_DRAIN_S = 90.0
#: At start, a missed slot other than :00/:30 is caught up only with at least this much of its window left.
CATCH_UP_MIN_LEFT_S = 10.0
#: ws mode: how long a scan waits for the final candles of an hour that just closed (Binance: ~2 s after the
#: close) before asking REST for the symbols still lacking them.
FINALS_WAIT_S = 8.0


@dataclass(frozen=True)
class Alert:
    kind: str
    symbol: str
    candles: Candles
    quote: Quote
    text: str


class VolumeAlerts:
    def __init__(self, settings: Settings, *, rest: BinanceRest | None = None, source: FundingSource | None = None,
                 backends: list[Backend] | None = None, telegram: Telegram | None = None, dry_run: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        #: Set by SIGTERM (``run_forever``'s event): sleeps end at once, klines not started are skipped.
        self.stop = threading.Event()
        self.rest = rest or BinanceRest(settings.binance_rest_url, timeout=settings.binance_rest_timeout_s,
                                        retries=settings.binance_rest_retries,
                                        pool_size=settings.klines_concurrency + 2,  # one per klines thread
                                        sleep=lambda s: interruptible_sleep(self.stop)(s))
        self.source = source or FundingSource(settings, self.rest, "volume_alerts")
        self.market = LocalMarketClient.for_settings(settings)
        self.backends = backends_from(settings) if backends is None else backends
        self.telegram = telegram or Telegram(settings.telegram_api_url, settings.telegram_token,
                                             settings.telegram_chat_id, timeout=settings.telegram_timeout_s)
        # One outbox per receiver: a hung backend or Telegram delays only its own deliveries, never a scan.
        self.outboxes = {name: Outbox(name, OUTBOX_MAX) for name in
                         ([b.name for b in self.backends] + (["Telegram"] if self.telegram.enabled else []))}
        self.book = AlertBook(settings.volume_alert_state_file, clock)
        self.dry_run = dry_run
        self._clock = clock
        self._universe: list[str] = []
        self._universe_at = float("-inf")
        #: Symbols the last scan got candles for (``--once`` fails when none).
        self.last_judged = 0

    def banner(self) -> None:
        log.info("hourly volume alerts: spike at >= %gx previous hour and >= %s USDT; funding %s",
                 self.settings.volume_multiple, fmt_volume(self.settings.min_quote_vol), self.source.describe())
        log.info("backends: %s; Telegram: %s%s", ", ".join(map(repr, self.backends)) or "none configured",
                 "on" if self.telegram.enabled else "off (TELEGRAM_TOKEN / TELEGRAM_CHAT_ID unset)",
                 "; DRY RUN: nothing is sent" if self.dry_run else "")

    def universe(self) -> list[str]:
        """USDT perpetuals in TRADING status: every scan from the local API's exchangeInfo (no weight) when it is
        fresh, else from REST at most hourly; the last good list survives a failed refresh."""
        local = None if self.source.mode == "rest" else self.source.local.exchange_info(LOCAL_EXCHANGE_INFO_MAX_AGE_S)
        if local is not None or self._clock() - self._universe_at >= UNIVERSE_TTL_S or not self._universe:
            try:
                fresh = usdt_perpetuals(local if local is not None else self.rest.exchange_info())
                if fresh:
                    self._universe, self._universe_at = fresh, self._clock()
            except RestError as exc:
                log.warning("exchangeInfo failed (%s); keeping %d cached symbols", exc, len(self._universe))
        return self._universe

    def _rows(self, symbol: str, slot: datetime, failures: dict[str, str]) -> list[list[Any]] | None:
        try:
            return self.rest.klines(symbol, "1h", klines_limit(slot))
        except RateLimited:
            return None  # the client logged the 429/418 once; one line per symbol would flood the journal
        except RestError as exc:
            failures[symbol] = str(exc)  # one line per scan (below): an outage would be one per symbol
            return None

    def scan(self, slot: datetime) -> list[Alert]:
        """One scan for ``slot`` (computed by the caller, so a late scan still judges the right candles)."""
        started = self._clock()
        symbols = self.universe()
        failures: dict[str, str] = {}
        # ws mode: one local call for every symbol's candles; REST only for what the local feed cannot answer.
        # validate mode: REST decides, the local candles are compared with it.
        mode = self.source.mode
        local = self.market.klines(klines_limit(slot), settle_s=FINALS_WAIT_S if mode == "ws" else 0.0,
                                   stop=self.stop) if mode in ("ws", "validate") else {}
        candles = {s: pick_candles(local[s], slot) for s in symbols if s in local} if mode == "ws" else {}
        lacking = [s for s in symbols if candles.get(s) is None]
        rows = dict(zip(lacking, map_daemon(lambda s: self._rows(s, slot, failures), lacking,
                                            self.settings.klines_concurrency, self.stop)))
        candles.update({s: None if r is None else pick_candles(r, slot) for s, r in rows.items()})
        compared = compare_candles(self.source.comparisons, local, rows, self._clock()) if mode == "validate" else []
        if mode == "ws":
            log.info("scan %s: candles of %d symbols from the local feed, %d from REST", iso_z(slot),
                     len(symbols) - len(lacking), len(lacking))
        if self.stop.is_set():
            log.info("scan %s abandoned at the stop: nothing of it is sent", iso_z(slot))
            return []
        if failures:
            first = min(failures)
            log.warning("klines failed for %d symbol(s) this scan, e.g. %s: %s", len(failures), first,
                        failures[first])
        quotes = self.source.quotes(symbols, compared)
        alerts = []
        for symbol in symbols:
            c = candles[symbol]
            if c is None:
                continue
            spike = is_spike(c, self.settings.volume_multiple, self.settings.min_quote_vol)
            kind = self.book.decide(symbol, c, slot, spike)
            line = (f"{symbol:<16} prev {fmt_volume(c.prev_volume):>9}  curr {fmt_volume(c.curr_volume):>9}  "
                    f"ratio {c.ratio:6.2f}x")
            if kind is None:
                # DEBUG: one line per symbol per scan was ~28 MB of journal a day; INFO keeps the scan summary below.
                log.debug("%s", line)
                continue
            log.warning("%s  <<< %s >>>", line, kind)
            alert = Alert(kind, symbol, c, quotes.get(symbol, UNKNOWN), alert_text(kind, symbol, c))
            self._send(alert, slot, started)
            alerts.append(alert)
        missing = sum(c is None for c in candles.values())
        self.last_judged = len(symbols) - missing
        log.info("scan %s done in %.1f s: %d symbols, %d without candles, %d alerts", iso_z(slot),
                 self._clock() - started, len(symbols), missing, len(alerts))
        report_status(self.settings.volume_alert_state_file, "volume_alerts", self.rest,
                               [*self.backends, self.telegram], self.outboxes.values())
        return alerts

    def _payload(self, alert: Alert, slot: datetime, started: float) -> dict[str, Any]:
        c = alert.candles
        payload: dict[str, Any] = {
            "symbol": alert.symbol, "asset": asset_of(alert.symbol), "currentVolume": c.curr_volume,
            "previousVolume": c.prev_volume, "volumeRatio": round(c.ratio, 4), "price": c.close,
            "fundingRate": alert.quote.funding_rate, "candleDirection": c.direction, "message": alert.text,
            "timestamp": iso_z(datetime.fromtimestamp(started, timezone.utc)), "detectionTime": iso_z(slot),
            "hourTimestamp": iso_z(c.hour), "isUpdate": alert.kind != SPIKE, "alertType": alert.kind,
            "priceChange": c.price_change}
        return {k: v for k, v in payload.items() if v is not None}  # the backend rejects null: omit unknowns

    def _oi_change(self, backend: Backend, symbol: str, hour: datetime, current: float | None) -> float | None:
        if current is None:
            return None
        snapshot = backend.get_json("/api/market/open-interest/snapshot", {"symbol": symbol, "ts": iso_z(hour)})
        if not isinstance(snapshot, dict) or snapshot.get("found") is not True:
            return None
        try:
            start = float(snapshot["openInterest"])
        except (KeyError, TypeError, ValueError):
            return None
        return current / start - 1 if start > 0 else None

    def _send(self, alert: Alert, slot: datetime, started: float) -> None:
        payload = self._payload(alert, slot, started)
        if self.dry_run:
            # Nothing recorded either: a dry run against the production dedup file must not suppress real alerts.
            log.info("DRY RUN: would send %s to Telegram and %d backend(s): %s", alert.kind, len(self.backends),
                     payload)
            return
        # Recorded before anything is sent: whatever happens next (a crash, a hung receiver), this alert is never
        # sent twice. Each receiver then gets it at most once, from its own outbox.
        self.book.record(alert.symbol, alert.candles, slot, alert.kind)
        if self.telegram.enabled:
            self.outboxes["Telegram"].put(functools.partial(self.telegram.send, alert.text))
        current_oi = None
        if self.backends:  # one Binance call per alert, whatever the number of backends (through the paced client)
            try:
                current_oi = float(self.rest.open_interest(alert.symbol)["openInterest"])
            except (RestError, KeyError, TypeError, ValueError) as exc:
                log.warning("%s openInterest unavailable (%s): oiChange omitted", alert.symbol, exc)
        for backend in self.backends:
            self.outboxes[backend.name].put(functools.partial(self._deliver, backend, alert, payload, current_oi))

    def _deliver(self, backend: Backend, alert: Alert, payload: dict[str, Any], current_oi: float | None) -> None:
        """On ``backend``'s own outbox thread: its oiChange (a GET to it) and the POST, at most once."""
        body = dict(payload)
        oi_change = self._oi_change(backend, alert.symbol, alert.candles.hour, current_oi)
        if oi_change is not None:
            body["oiChange"] = round(oi_change, 6)
        backend.post("/api/volume-alerts/ingest", body, what=f"volume {alert.kind} {alert.symbol}")

    def drain(self, timeout: float) -> bool:
        """Wait for every queued delivery (``--once`` exits after this); ``False`` if a receiver is still busy."""
        deadline = time.monotonic() + timeout
        return all(o.drain(max(0.0, deadline - time.monotonic())) for o in self.outboxes.values())

    def close(self) -> None:
        self.source.comparisons.flush()  # the last window's line, so no validation is lost at a stop
        for outbox in self.outboxes.values():
            outbox.close(timeout=1.0)

    def _start_slot(self) -> datetime:
        """The first slot to scan: the current one when a restart missed it (a restart at :00-:04 would lose the
        hour's :00 scan), unless it was scanned before the restart (the status file is written after each scan)
        or, for a slot without updates, its window is all but over; otherwise the next one."""
        now = self._clock()
        current = slot_of(datetime.fromtimestamp(now, timezone.utc))
        try:
            scanned = consumer_status.status_path(self.settings.volume_alert_state_file, "volume_alerts").stat()
            done = scanned.st_mtime >= current.timestamp()
        except OSError:
            done = False
        left = (current + SLOT).timestamp() - now
        if done or (current.minute not in (0, 30) and left < CATCH_UP_MIN_LEFT_S):
            return current + SLOT
        log.warning("started %.0f s after slot %s, which was not scanned: catching it up now", SLOT.seconds - left,
                    iso_z(current))
        return current

    def run_forever(self, stop: threading.Event) -> None:
        self.stop = stop
        slot = self._start_slot()
        while not stop.is_set():
            log.info("next scan at %s", iso_z(slot))
            if stop.wait(max(0.0, slot.timestamp() - self._clock())):
                break
            self.scan(slot)
            slot += SLOT
            # An overrun must not silently lose a slot: :00 and :30 carry updates and are caught up, others are
            # skipped with a warning.
            while slot + SLOT <= datetime.fromtimestamp(self._clock(), timezone.utc) and not stop.is_set():
                if slot.minute in (0, 30):
                    log.warning("scan overran: catching up slot %s", iso_z(slot))
                    self.scan(slot)
                else:
                    log.warning("scan overran: slot %s skipped", iso_z(slot))
                slot += SLOT


def parse_now(raw: str) -> datetime:
    try:
        return iso_time(raw)
    except ValueError as exc:
        raise SettingsError(f"--now: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("hourly_volume_alert_dual_env", "Hourly volume-spike alerts (Telegram + VolSpike).",
                          CONSUMER, ALERTS, exit_codes="exit codes: 0 stopped on request (SIGTERM, SIGINT) or "
                                                       "--once done; 1 failed (logged), or --once found no symbol "
                                                       "with candles; 2 bad settings or usage.")
    parser.add_argument("--once", action="store_true",
                        help="run one scan for the current slot, then exit; exit code 1 when no symbol had candles")
    parser.add_argument("--now", metavar="ISO", help="with --once: the time whose 5-minute slot is scanned")
    parser.add_argument("--dry-run", action="store_true", help="log what would be sent, send nothing")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, CONSUMER, ALERTS)
        if args.now and not args.once:
            raise SettingsError("--now needs --once")
        moment = parse_now(args.now) if args.now else None
        setup_logging(settings.log_level, secret_values(settings))
        log.info("%s", env_file_line(args))
        alerts = VolumeAlerts(settings, dry_run=args.dry_run)
        alerts.banner()
        if args.once:
            alerts.scan(slot_of(moment or datetime.now(timezone.utc)))
            if not alerts.drain(ONCE_DRAIN_S):
                log.warning("some deliveries were still in progress after %.0f s; exiting anyway", ONCE_DRAIN_S)
            alerts.source.comparisons.flush()
            if not alerts.last_judged:
                # A cron job or a smoke test must see a scan that judged nothing as a failure, not as success.
                log.error("--once judged no symbol at all (exchangeInfo or klines unavailable?)")
                return EXIT_FAILURE
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        run_until_stopped(lambda: alerts.run_forever(stop), stop, alerts.outboxes.values(), drain_s=ONCE_DRAIN_S)
        alerts.source.comparisons.flush()  # the last window's line, so no validation is lost at a stop
        return 0

    return run("hourly_volume_alert_dual_env", body)

