"""The daemon's second connection: 1 h klines of every trading USDT perpetual and the 24 h tickers.

A connection of its own, with a loop on a thread of its own: up to ~2,000 kline messages a second on a busy hour
must never queue in front of a mark-price frame (``bench/bench_market.py`` measures the mark-price freshness with
and without it). Its guarantees mirror the mark-price connection's: ``!ticker@arr`` (in the URL) arrives every
second and is the no-data watchdog's signal, since a kline stream may rightly stay silent for an hour; the 24 h
rotation opens the replacement first and switches at its first ticker frame; ``<symbol>@kline_1h`` streams are
added by ``SUBSCRIBE`` within Binance's message rate (:class:`.streams.Subscriptions`), each acknowledged by id.
What the stream lacks (history at start, the hours of a gap, hours without a final message) comes from REST
within a weight budget (:mod:`.backfill`). The loop writes the market file (:mod:`volspike_funding.store.
marketfile`), or the shared store's copy (:mod:`volspike_funding.store.redis_market`), at most once a second.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Iterable

import orjson

from volspike_funding.binance.market_wire import Candle, kline_stream, parse_market_message
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.core.errors import FrameError
from volspike_funding.core.logs import RateLimitedLog
from volspike_funding.core.retry import Backoff
from volspike_funding.core.settings import Settings
from volspike_funding.feed.backfill import MAX_ROWS, Backfill
from volspike_funding.feed.candles import CandleBook, TickerBook, hour_of
from volspike_funding.feed.connection import CLOSED, FRAME, OPEN, Connection, Event
from volspike_funding.feed.streams import Subscriptions
from volspike_funding.feed.timers import reconnect_due, rotation_due, watchdog_expired
from volspike_funding.store.backend import WRITE_FAILURES, open_market_writer

log = logging.getLogger("funding.market")

UNIVERSE, BACKFILLED = "universe", "backfilled"
TICK_S = 0.5
WRITE_EVERY_S = 1.0
PLAN_EVERY_S = 5.0
HOUSEKEEP_EVERY_S = 0.05
HOUR_S = 3600.0


class MarketFeed:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, rest: BinanceRest | None = None) -> None:
        self.settings = settings
        self._clock, self._mono = clock, monotonic
        self._writer = open_market_writer(settings, clock)
        self._events: "queue.Queue[Event]" = queue.Queue()
        self._stop = threading.Event()
        self._ratelog = RateLimitedLog(log)
        self.book, self.tickers = CandleBook(), TickerBook()
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, jitter=1.0)
        self._retry = Backoff(max(settings.no_data_timeout_s, 2.0), 300.0)
        self._retry_at: float | None = None
        self.active: Connection | None = None
        self.candidate: Connection | None = None
        self.failures = 0
        self._reconnect_at: float | None = 0.0
        self._rotate_retry_at = 0.0
        #: Trading USDT perpetuals (the volume script's universe), from the daemon's reference data.
        self.universe: frozenset[str] = frozenset()
        #: Per connection id: symbol -> wall time its kline stream was acknowledged.
        self._since: dict[int, dict[str, float]] = {}
        self.reason: str | None = "not connected yet"
        self.last_frame_at: float | None = None
        self.connected_at: float | None = None
        self.counters = {"messages": 0, "malformed": 0, "defects": 0, "coin_m_rows": 0, "reconnects": 0,
                         "writes": 0, "write_errors": 0}
        self._last_write = self._last_plan = self._last_housekeeping = float("-inf")
        #: (symbol, open time) -> (the candle, its row serialized): a closed hour is serialized once, not each second.
        self._rows: dict[tuple[str, int], tuple[Candle, orjson.Fragment]] = {}
        rest = rest or BinanceRest(settings.binance_rest_url, timeout=settings.binance_rest_timeout_s, retries=1)
        self.backfill = Backfill(rest, self._backfilled, weight_per_min=settings.kline_backfill_weight_per_min,
                                 clock=clock)
        self._thread = threading.Thread(target=self._run, name="market-feed", daemon=True)

    def start(self) -> "MarketFeed":
        self.backfill.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.backfill.stop()

    def set_universe(self, symbols: Iterable[str]) -> None:
        self._events.put(Event(None, UNIVERSE, self._clock(), payload=frozenset(symbols)))

    def _backfilled(self, symbol: str, candles: list[Candle], limit: int, error: str | None) -> None:
        self._events.put(Event(None, BACKFILLED, self._clock(), reason=error or "",
                               payload=(symbol, candles, limit)))

    # -- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    event: Event | None = self._events.get(timeout=TICK_S)
                except queue.Empty:
                    event = None
                self.step(event)
        finally:
            for conn in (self.active, self.candidate):
                if conn is not None:
                    conn.abort("daemon stopping", polite=True)
            self.reason = "daemon stopping"
            self.active = None
            self._write()

    def step(self, event: Event | None) -> None:
        if event is not None:
            self._handle(event)
        mono = self._mono()
        # Timers and subscriptions at most every HOUSEKEEP_EVERY_S: per message (~2,400 a second on a busy hour)
        # they cost more than the messages themselves; a frame's arrival changes nothing they decide sooner.
        if event is None or event.kind != FRAME or mono - self._last_housekeeping >= HOUSEKEEP_EVERY_S:
            self._last_housekeeping = mono
            self._housekeeping()
        if mono - self._last_write >= WRITE_EVERY_S:
            self._write()

    def _handle(self, event: Event) -> None:
        if event.kind == UNIVERSE:
            gone = self.universe - event.payload
            self.universe = event.payload
            self.book.drop(gone)
            self.tickers.drop(gone)
            self._last_plan = float("-inf")
            return
        if event.kind == BACKFILLED:
            symbol, candles, limit = event.payload
            if event.reason:
                self._ratelog.warning("backfill", f"kline backfill failed: {event.reason}")
            elif symbol in self.universe:
                self.book.apply_rest(symbol, candles, asked=limit)
            return
        conn = event.conn
        if conn is None or (conn is not self.active and conn is not self.candidate):
            return
        if event.kind == OPEN:
            conn.opened = self._mono()
            conn.subs = Subscriptions(kline_stream)
            self._since[conn.id] = {}
            if conn is self.active:
                self._opened(event.at)
        elif event.kind == FRAME:
            self._on_frame(conn, event)
        elif event.kind == CLOSED:
            self._on_closed(conn, event)

    def _opened(self, at: float) -> None:
        self.connected_at, self.reason = at, None
        log.info("market feed connected to %s", self.settings.market_ws_url)

    def _on_frame(self, conn: Connection, event: Event) -> None:
        self.counters["messages"] += 1
        try:
            message = parse_market_message(event.data)
        except FrameError as exc:
            self.counters["malformed"] += 1
            self._ratelog.warning(exc.kind, f"market feed: malformed message skipped: {exc}")
            return
        if message.reply is not None:
            answered = conn.subs.reply(*message.reply)
            if answered is not None and message.reply[1] is None:
                if self._retry.failures and not conn.subs.held:
                    log.info("kline subscriptions acknowledged again after %d failures", self._retry.failures)
                    self._retry.reset()
                since = self._since.setdefault(conn.id, {})
                for symbol in answered.symbols:
                    since.setdefault(symbol, event.at)
            elif answered is not None:
                self._failed(f"Binance answered SUBSCRIBE {answered.id} with {message.reply[1]}")
        for kind, detail in message.defects:
            self.counters["defects"] += 1
            self._ratelog.warning(kind, f"market feed: item skipped: {detail}")
        self.counters["coin_m_rows"] += message.other_kinds.get("coin_m", 0)
        if message.all_tickers:
            if conn is self.candidate:
                self._promote(conn)
            conn.last_all_market = conn.last_data = self._mono()
            self.last_frame_at = event.at
            universe = self.universe
            self.tickers.apply(t for t in message.tickers if not universe or t.symbol in universe)
            if self.failures:
                log.info("market feed receiving again after %d failed attempts", self.failures)
                self.failures = 0
        for candle in message.candles:
            if candle.symbol in self.universe:
                self.book.apply_stream(candle)

    def _promote(self, conn: Connection) -> None:
        old, self.active, self.candidate = self.active, conn, None
        self._reconnect_at = None
        self._opened(self._clock())
        if old is not None:
            self._since.pop(old.id, None)
            old.abort("rotated to a fresh connection", polite=True)
        log.info("market feed rotation: switched to the replacement connection")

    def _failed(self, why: str) -> None:
        delay = self._retry.next()
        self._retry_at = self._mono() + delay
        self._ratelog.warning("kline_subscribe", f"kline subscriptions failing: {why}; asked again in {delay:.0f} s")

    def _on_closed(self, conn: Connection, event: Event) -> None:
        self._since.pop(conn.id, None)
        reason = event.reason or "connection ended"
        if conn is self.candidate:
            self.candidate = None
            self._rotate_retry_at = self._mono() + self.settings.no_data_timeout_s
            log.warning("market feed rotation: replacement failed (%s); keeping the current one", reason)
            return
        self.active, self.reason = None, reason
        self.failures += 1
        self.counters["reconnects"] += 1
        delay = self._backoff.delay(self.failures)
        if event.retry_after is not None:
            delay = max(delay, min(event.retry_after, self.settings.backoff_max_s))
        self._reconnect_at = self._mono() + delay
        log.warning("market feed disconnected: %s; reconnecting in %.2f s", reason, delay)

    # -- timers ------------------------------------------------------------------------------------------
    def _connect(self) -> Connection:
        s = self.settings
        return Connection(s.market_ws_url, self._events, connect_timeout=s.connect_timeout_s,
                          idle_timeout=max(3 * s.no_data_timeout_s, 30.0), clock=self._clock,
                          monotonic=self._mono).start()

    def _housekeeping(self) -> None:
        s, mono = self.settings, self._mono()
        if self.active is None and reconnect_due(self._reconnect_at, mono):
            self._reconnect_at = None
            self.active = self._connect()
        for conn in (self.active, self.candidate):
            if conn is not None and not conn.aborting and watchdog_expired(conn, mono, s.no_data_timeout_s,
                                                                           all_market=True):
                conn.abort(f"no !ticker@arr frame for {s.no_data_timeout_s:g} s (watchdog)")
        if rotation_due(self.active, mono, s.rotate_after_s, replacing=self.candidate is not None,
                        retry_at=self._rotate_retry_at):
            self.candidate = self._connect()
        self._subscribe(mono)
        if mono - self._last_plan >= PLAN_EVERY_S and self.last_frame_at is not None:
            self._last_plan = mono
            self._plan_backfill()

    def _subscribe(self, mono: float) -> None:
        for conn in (self.active, self.candidate):
            if conn is None or conn.opened is None or conn.aborting:
                continue
            subs = conn.subs
            for late in subs.overdue(mono, self._retry.base):
                self._failed(f"no reply to SUBSCRIBE {late.id} within {self._retry.base:g} s")
            if self._retry_at is not None and mono >= self._retry_at:
                subs.release()
            if subs.symbols != self.universe:
                subs.plan(set(self.universe))
            message = subs.next_message(mono)
            if message is not None and not conn.send(message):
                log.warning("market feed: could not send a subscription; the connection is being replaced")
        if self._retry_at is not None and mono >= self._retry_at:
            self._retry_at = None

    def _plan_backfill(self) -> None:
        now_ms = int(self._clock() * 1000)
        for symbol in sorted(self.universe):
            missing = self.book.missing(symbol, now_ms)
            if missing:
                self.backfill.ask(symbol, min((hour_of(now_ms) - missing[0]) // 3_600_000 + 1, MAX_ROWS))

    # -- the market file ---------------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        since = self._since.get(self.active.id, {}) if self.active is not None else {}
        klines = {}
        cache, fresh = self._rows, {}
        for symbol in self.universe:
            rows = self.book.rows(symbol)
            serialized = []
            for c in rows:
                key = (symbol, c.open_time)
                held = cache.get(key)
                if held is None or held[0] is not c:
                    held = (c, orjson.Fragment(orjson.dumps(c.rest_row())))
                fresh[key] = held
                serialized.append(held[1])
            klines[symbol] = {"since": since.get(symbol), "rows": serialized, "final": [c.closed for c in rows],
                              "receivedAt": max((c.event_time for c in rows), default=0) / 1000 or None,
                              "firstOpen": self.book.first.get(symbol)}
        self._rows = fresh  # what the book dropped leaves the cache with it
        bf = self.backfill
        return {"writtenAt": self._clock(), "connected": self.active is not None and self.reason is None,
                "connectedAt": self.connected_at, "lastFrameAt": self.last_frame_at, "reason": self.reason,
                "interval": "1h", "universe": len(self.universe), "klines": klines,
                "tickers": {s: {**t.rest(), "E": t.event_time} for s, t in self.tickers.tickers.items()},
                "backfill": {"pending": len(bf.pending), "weightThisMinute": bf.weight_this_minute,
                             "totalWeight": bf.total_weight, "lastError": bf.last_error,
                             **bf.pause(self._clock())},
                "counters": {**self.counters, **self.book.counters}}

    def _write(self) -> None:
        self._last_write = self._mono()
        try:
            self._writer.write(self.document())
            self.counters["writes"] += 1
        except WRITE_FAILURES as exc:  # a full disk, the shared store away: the next second tries again
            self.counters["write_errors"] += 1
            self._ratelog.warning("market_write", f"cannot write {self._writer.location}: {exc}")
