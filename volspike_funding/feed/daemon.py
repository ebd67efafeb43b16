"""The funding daemon: keeps one healthy Binance mark-price connection and the shared state file fresh.

Single-threaded decisions: connection threads only receive (:mod:`.connection`), the reference fetcher only calls
REST (:mod:`.reference_fetch`), klines live in a child process (:mod:`.market_process`); this loop parses, stores,
writes, and runs the watchdog, the reconnect backoff, the 24 h rotation, the per-symbol subscriptions and sd_notify.
"""

from __future__ import annotations

import logging
import queue
import random
import signal
import threading
import time
from typing import Callable, Collection, Sequence

import orjson

from volspike_funding.binance.wire import ALL_MARKET_PREFIX, parse_frame
from volspike_funding.core.cli import (EXIT_OK, build_parser, env_file_line, freeze_startup_heap, run,
                                        settings_from_args)
from volspike_funding.core.errors import FrameError
from volspike_funding.core.logs import RateLimitedLog, setup_logging
from volspike_funding.core.retry import Backoff
from volspike_funding.core.settings import DAEMON, Settings, secret_values
from volspike_funding.feed.connection import CLOSED, FRAME, OPEN, REFERENCE, Connection, Event, warn_legacy_url
from volspike_funding.feed.market_process import MarketProcess
from volspike_funding.feed.reference_fetch import ReferenceFetcher, release_memory
from volspike_funding.feed.sdnotify import Notifier, status_line
from volspike_funding.feed.state import ClockSkew, FundingStore
from volspike_funding.feed.streams import StreamManager
from volspike_funding.feed.timers import reconnect_due, rotation_due, watchdog_expired
from volspike_funding.store import reference
from volspike_funding.store.backend import WRITE_FAILURES, open_writer
from volspike_funding.store.reference import ReferenceData

log = logging.getLogger("funding.daemon")

TICK_S = 0.5  # how often the loop wakes when nothing arrives (the watchdog, the heartbeat)
PRUNE_EVERY_S = 60.0
#: A stored event time may be this far past Binance's clock (as measured) and still outrank a newer frame's.
FUTURE_SLACK_MS = 5_000
#: An all-market frame is written at once; per-symbol frames (up to ~200 a second, spread over it) ride along with
#: it (the next one is due within a second), or are written after this long at the latest: one write a second.
COALESCE_S = 1.5


class Daemon:
    def __init__(self, settings: Settings, *, rng: Callable[[], float] = random.random,
                 notifier: Notifier | None = None, tick_s: float = TICK_S,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 connect: Callable[[], Connection] | None = None) -> None:
        """``clock``/``monotonic``: the only clocks the daemon reads (tests pass a fake pair); ``connect``: makes
        and starts a connection (default: a real one to ``settings.ws_url``)."""
        self.settings = settings
        # Full jitter: daemons restarted together (a deploy, a Binance outage) do not reconnect in step.
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, jitter=1.0, rng=rng)
        self._clock, self._mono = clock, monotonic
        self._connect = connect or self._connect_ws
        #: The entry point's "env file: ..." line, logged once the lock is held (a refused start stays one line).
        self.env_note: str | None = None
        self._notifier = notifier or Notifier()
        self._tick = min(tick_s, settings.no_data_timeout_s / 4)
        self._events: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._ratelog = RateLimitedLog(log)
        self.store = FundingStore(settings.ws_url, started_at=clock(), heartbeat_s=settings.heartbeat_s)
        self.clock = ClockSkew()
        # Binance answers a SUBSCRIBE within milliseconds: one unanswered for as long as the watchdog waits is lost.
        self.streams = StreamManager(pause_base_s=3 * settings.no_data_timeout_s,
                                     reply_timeout_s=max(settings.no_data_timeout_s, 2.0))
        self.fetcher: ReferenceFetcher | None = None
        self.market: MarketProcess | None = None
        self._max_skew_ms = int(settings.max_event_skew_s * 1000)
        # The watchdog listens to the all-market frames when that is what we subscribe to: per-symbol frames
        # arriving must not hide an all-market stream gone silent.
        self._all_market_url = ALL_MARKET_PREFIX.lower() in settings.ws_url.lower()
        self.active: Connection | None = None
        self.candidate: Connection | None = None
        self.failures, self._rotate_retry_at = 0, 0.0
        self._reconnect_at: float | None = 0.0
        self._ready, self._dirty, self._last_write = False, False, 0.0
        self._last_write_ok = self._last_prune = monotonic()

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag, the loop notices within one tick."""
        self._stop.set()

    def run(self) -> int:
        self.open()
        try:
            while not self._stop.is_set():
                try:
                    event: Event | None = self._events.get(timeout=self._tick)
                except queue.Empty:
                    event = None
                self.step(event)
            self._shutdown()
        finally:
            self.close()
        return EXIT_OK

    def open(self) -> None:
        """Take the writer, restore the previous state, start the reference fetcher, write the first state."""
        writer = open_writer(self.settings)
        self._writer = writer
        s = self.settings
        try:
            # With the shared store, every daemon's data stays there: only the reference data is carried over.
            self.store.restore_previous(s.reference_path, None if s.store_url else s.state_file,
                                        s.max_event_skew_s, now=self._clock())
            if s.reference_enabled:
                self.fetcher = ReferenceFetcher.for_settings(s, self.store.reference or ReferenceData(),
                                                             self._reference_result).start()
            self.market = MarketProcess.for_settings(s, self.store.reference, monotonic=self._mono)
            log.info("starting: %s -> %s", self.settings.ws_url, writer.location)
            if self.env_note:
                log.info("%s", self.env_note)
            warn_legacy_url(self.settings.ws_url)
            self._write()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for part in (self.fetcher, self.market):
            if part is not None:
                part.stop()
        self._writer.close()
        self._notifier.close()

    def step(self, event: Event | None) -> None:
        """One pass of the loop: handle ``event`` (if any), then every timer. Tests drive it with a fake clock."""
        if event is not None:
            self._handle(event)
        if self._dirty and self._mono() - self._last_write >= COALESCE_S:
            self._write()
        self._housekeeping()

    def _reference_result(self, data: ReferenceData, error: str | None) -> None:
        """Called on the fetcher's thread: hand over to the loop."""
        self._events.put(Event(None, REFERENCE, self._clock(), reason=error or "", payload=data))

    def _shutdown(self) -> None:
        self._notifier.notify("STOPPING=1", "STATUS=stopping")
        for conn in (self.active, self.candidate):
            if conn is not None:
                conn.abort("daemon stopping", polite=True)
        self.store.note_disconnected(self._clock(), "daemon stopping")
        if self._write(stopped=True):
            log.info("stopped; final state written with connected=false")
        else:
            log.error("stopped; the final state could NOT be written (readers will see the heartbeat age)")

    # -- events ----------------------------------------------------------------------------------------
    def _handle(self, event: Event) -> None:
        conn = event.conn
        if event.kind == REFERENCE:
            self._on_reference(event)
            return
        if conn is None or (conn is not self.active and conn is not self.candidate):
            return  # a connection we already gave up on
        if event.kind == FRAME:
            self._on_frame(conn, event)
        elif event.kind == OPEN:
            conn.opened = self._mono()
            if conn is self.active:
                self.store.note_connected(event.at)
                log.info("connected to %s", conn.url)
                self._write()
            else:
                log.info("rotation: replacement connection open, switching at its first frame")
        elif event.kind == CLOSED:
            self._on_closed(conn, event)

    def _on_reference(self, event: Event, carried: Collection[str] | None = None) -> None:
        """New reference data, or (``carried``: an all-market frame's symbols) the stream contradicting it."""
        data: ReferenceData = event.payload
        doubt = self.store.listing_doubt(data, self.store.symbols if carried is None else carried)
        if doubt:  # the stream wins: no listing until one agrees with it (asked for at once)
            data = data.with_(exchange_info=None, exchange_info_at=None)
            self._ratelog.warning("listing_doubt", doubt)
            if self.fetcher is not None:
                self.fetcher.request_refresh(doubt)
        self.store.note_reference_result(doubt or event.reason or None, event.at)
        if data is not self.store.reference:
            try:
                reference.write(self.settings.reference_path, data)
            except OSError as exc:
                self._ratelog.warning("write_error", f"cannot write {self.settings.reference_path}: {exc}")
            self._writer.write_reference(orjson.dumps(data.document()), data.symbols if data.known else None)
            self.store.set_reference(data)
            if self.market is not None:
                self.market.follow(data)
            self.streams.replan()
            release_memory()
        self._write()

    def _on_frame(self, conn: Connection, event: Event) -> None:
        self.store.note_frame(event.at)
        received_ms = int(event.at * 1000)
        try:
            parsed = parse_frame(event.data, received_ms + self.clock.offset_ms, self._max_skew_ms)
        except FrameError as exc:
            self.store.count_malformed(exc.kind)
            self._ratelog.warning(exc.kind, f"malformed frame skipped: {exc} ({event.data[:80]!r})")
            return
        self.store.note_parsed(parsed)
        if parsed.reply is not None:
            self.streams.replied(conn, *parsed.reply, self._mono())
        if parsed.all_market and parsed.event_ms is not None:
            self.clock.add(parsed.event_ms, received_ms)
        for kind, detail in parsed.defects:
            self._ratelog.warning(kind, f"malformed item skipped: {detail}")
        if not parsed.updates:
            return
        if conn is self.candidate:
            self._promote(conn)
        mono = self._mono()
        first_data, conn.last_data = conn.last_data is None, mono
        if parsed.all_market:
            ref, carried = self.store.reference, [u.symbol for u in parsed.updates]
            if ref is not None and self.store.listing_doubt(ref, carried):
                self._on_reference(Event(None, REFERENCE, event.at, payload=ref), carried)
            conn.last_all_market = mono
            self.streams.coverage.note_all_market((u.symbol for u in parsed.updates), mono)
        if first_data and self.failures:
            log.info("receiving data again after %d failed attempts; backoff reset", self.failures)
            self.failures = 0
        self.store.apply(parsed.updates, event.at, received_ms + self.clock.skew_ms + FUTURE_SLACK_MS)
        if self.store.unlisted_seen and self.fetcher is not None:
            self.fetcher.request_refresh(f"the stream sends symbols exchangeInfo does not list: "
                                         f"{', '.join(sorted(self.store.unlisted_seen)[:5])}", self.store.unlisted_seen)
        if parsed.all_market or not self._all_market_url:
            self._write()
        else:
            self._dirty = True
        if not self._ready:
            self._ready = True
            self._notifier.notify("READY=1", self._status_line())
            log.info("first frame stored: %d symbols", len(self.store.symbols))

    def _promote(self, conn: Connection) -> None:
        old, self.active, self.candidate = self.active, conn, None
        self._reconnect_at = None  # the replacement is the connection now, even if the old one already dropped
        self.store.note_connected(self._clock(), rotated=True)
        if old is not None:
            old.abort("rotated to a fresh connection", polite=True)
        log.info("rotation: switched to the replacement connection without a gap")

    def _on_closed(self, conn: Connection, event: Event) -> None:
        reason = event.reason or "connection ended"
        self.streams.closed(conn, self._mono(), reason)
        if conn is self.candidate:
            self.candidate = None
            self._rotate_retry_at = self._mono() + self.settings.no_data_timeout_s
            log.warning("rotation: replacement connection failed (%s); keeping the current one", reason)
            return
        self.active = None
        self.failures += 1
        delay, cap = self._backoff.delay(self.failures), self._backoff.ceiling(self.failures)
        if event.retry_after is not None:
            # Honoured as a minimum, but never beyond our own backoff cap: one refused handshake asking for an
            # hour must not stop reconnecting for an hour.
            used = min(event.retry_after, self.settings.backoff_max_s)
            log.warning("server asked to retry after %g s; waiting %g s (at most FUNDING_BACKOFF_MAX_S)",
                        event.retry_after, max(delay, used))
            delay = max(delay, used)
        self._reconnect_at = self._mono() + delay
        self.store.note_disconnected(event.at, reason, reconnecting=True)
        # A connection never opened was not "disconnected": its reason says "cannot connect to <host>".
        log.warning(("disconnected: %s; reconnecting" if conn.opened is not None else "%s; retrying") +
                    " in %.2f s (backoff cap %.1f s, consecutive failure %d)", reason, delay, cap, self.failures)
        self._write()

    # -- timers ----------------------------------------------------------------------------------------
    def _connect_ws(self) -> Connection:
        return Connection.for_settings(self.settings, self._events, clock=self._clock, monotonic=self._mono).start()

    def _housekeeping(self) -> None:
        s, mono = self.settings, self._mono()
        if self.active is None and reconnect_due(self._reconnect_at, mono):
            self._reconnect_at = None
            self.active = self._connect()
        for conn in (self.active, self.candidate):
            if (conn is not None and not conn.aborting
                    and watchdog_expired(conn, mono, s.no_data_timeout_s, all_market=self._all_market_url)):
                conn.abort(f"no mark-price data for {s.no_data_timeout_s:g} s (watchdog)")
        active = self.active
        if active is not None and rotation_due(active, mono, s.rotate_after_s, replacing=self.candidate is not None,
                                               retry_at=self._rotate_retry_at):
            log.info("rotation: connection is %.0f s old, opening its replacement", mono - (active.opened or mono))
            self.candidate = self._connect()
        if mono - self._last_prune >= min(PRUNE_EVERY_S, s.drop_after_s / 2):
            self._last_prune = mono
            if self.store.drop_unseen(self._clock(), s.drop_after_s):
                self._write()
        if mono - self._last_write >= s.heartbeat_s:
            self._write()
        ref = self.store.reference
        open_conns = [c for c in (self.active, self.candidate) if c is not None and c.opened is not None
                      and not c.aborting]
        self.streams.tick(open_conns, ref.trading if ref is not None and ref.known and self._all_market_url
                          else None, mono)
        if self.market is not None:
            self.market.check()
        age = self.store.data_age(self._clock())
        self._notifier.pet(mono, age is not None and age <= s.stale_after_s, self._status_line)

    def _status_line(self) -> str:
        failing = self._mono() - self._last_write_ok > 2 * self.settings.heartbeat_s
        return status_line(len(self.store.symbols), self.store.data_age(self._clock()), self.store.connected,
                           self._writer.location if failing else None)

    def _write(self, *, stopped: bool = False) -> bool:
        self._last_write = self._mono()
        self._dirty = False
        try:
            self._writer.write(self.store.document(self._clock(), stopped=stopped, clock=self.clock.status(),
                                                   streams=self.streams.status(self._mono()),
                                                   unconfirmed=self.fetcher.unconfirmed if self.fetcher else ()))
            self._last_write_ok = self._mono()
            return True
        except WRITE_FAILURES as exc:
            # A full or read-only disk, or the shared store unreachable: keep the data in memory and try again at
            # the next frame; readers see the heartbeat age and say so. Crashing would only lose the memory too.
            self.store.count_write_error()
            self._ratelog.warning("write_error", f"cannot write {self._writer.location}: {exc}")
            return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("binance_funding_ws_daemon",
                          "Keep Binance USD-M funding rates and mark prices in a shared state file.", DAEMON,
                          exit_codes="exit codes: 0 stopped on request (SIGTERM, SIGINT); 1 failed: the state could "
                                     "not be written or another daemon holds its lock (logged); 2 bad settings or "
                                     "usage.")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, DAEMON)
        setup_logging(settings.log_level, secret_values(settings))
        daemon = Daemon(settings)
        daemon.env_note = env_file_line(args)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: daemon.request_stop())
        freeze_startup_heap()
        return daemon.run()

    return run("binance_funding_ws_daemon", body)
