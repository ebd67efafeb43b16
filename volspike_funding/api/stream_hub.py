"""The local WebSocket's fan-out: who holds which stream, one frame per stream per update written to all of them,
and the connection-level rules Binance applies (pings, 24 h lifetime) plus the ones it lacks (stale data closes,
slow subscribers dropped, a connection cap).

The state cache's watcher thread builds each update's frames once (:meth:`StreamHub.notify`, off the event loop)
and hands them to the loop, which writes them to each subscriber's transport in batches, never awaited: a
subscriber that stopped reading costs its own buffer, bounded by ``max_buffer_bytes``, and nobody else's time, and
HTTP answers are served between batches. The market document (klines, tickers) is looked at by a thread of the
hub's own, which builds their frames the same way. Everything else here runs on the loop.

**Stale data.** Binance leaves a subscriber on an open, silent socket when its feed stalls; here, once the newest
mark price is older than ``stale_after_s`` (or the daemon stopped, or the state cannot be read), every local
connection is closed with 1013 *Try Again Later* and a reason naming the age, and new handshakes are answered
HTTP 503 with ``Retry-After`` and a JSON reason until the data is fresh again. Client libraries treat both as a
dropped connection and reconnect (ccxt, python-binance, Binance's SDK), so they resume by themselves once the
data is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

from volspike_funding.api.stream_frames import MarketFrames, MarkFrames, Payload
from volspike_funding.binance.stream_requests import ALL_TICKERS, CLOSE_STALE, Stream
from volspike_funding.core.logs import RateLimitedLog
from volspike_funding.store.backend import MarketReaderLike, StateReaderLike
from volspike_funding.store.marketfile import MarketSnapshot

log = logging.getLogger("funding.api")

#: Binance's keep-alive ("WebSocket Market Streams"): a ping every 3 minutes, closed without a pong in 10.
PING_INTERVAL_S = 180.0
PONG_TIMEOUT_S = 600.0
#: Binance: "A single connection to fstream.binance.com is only valid for 24 hours".
MAX_LIFETIME_S = 86400.0
#: Frames written before the loop serves HTTP again.
WRITE_BATCH = 16
#: How often the market document is looked at (it changes once a second).
MARKET_POLL_S = 0.25


class Subscriber(Protocol):
    #: Handshake done and not closing: frames are written to it.
    open: bool
    opened_at: float
    last_heard: float
    last_ping: float
    #: Negotiated permessage-deflate (with the server window the shared compressed frames are made for).
    deflate: bool

    @property
    def combined(self) -> bool:
        """Payloads wrapped ``{"stream", "data"}``."""
        ...

    def send_frame(self, frame: bytes) -> bool:
        """Queue a frame; ``False`` when the subscriber was dropped (its unread bytes beyond the budget)."""
        ...

    def close(self, code: int, reason: str) -> None:
        ...

    def ping(self) -> None:
        ...


@dataclass
class HubCounters:
    delivered: int = 0
    compressed: int = 0  # of them, with RSV1 set (permessage-deflate)
    dropped_slow: int = 0
    closed_stale: int = 0
    closed_limits: int = 0
    refused_stale: int = 0
    refused_full: int = 0


class StreamHub:
    def __init__(self, cache: StateReaderLike, stale_after_s: float, max_connections: int = 2048,
                 max_buffer_bytes: int = 1024 * 1024, clock: Callable[[], float] = time.time,
                 market: MarketReaderLike | None = None, max_buffered_bytes: int = 64 * 1024 * 1024) -> None:
        """``market``: the market document's reader (klines and tickers streams); ``None``: not served.
        ``max_buffer_bytes``: unread bytes one subscriber may leave; ``max_buffered_bytes``: all of them."""
        self.cache = cache
        self.market = market
        self.max_buffered_bytes = max_buffered_bytes
        #: Subscribers whose unread bytes are above their transport's high-water mark.
        self.stalled: set[Any] = set()
        self.stale_after_s = stale_after_s
        self.max_connections = max_connections
        self.max_buffer_bytes = max_buffer_bytes
        self.clock = clock
        self.ping_interval_s, self.pong_timeout_s, self.max_lifetime_s = PING_INTERVAL_S, PONG_TIMEOUT_S, MAX_LIFETIME_S
        self.sockets: set[Subscriber] = set()
        self.deflaters = 0  # open subscribers that take compressed frames: while there are none, none are made
        self.index: dict[str, set[Subscriber]] = {}
        self.counters = HubCounters()
        self.stale_reason: str | None = None
        #: The API is shutting down: its subscribers get 1001, and a daemon stopped alongside is no news.
        self.closing = False
        #: The data has been fresh since the start: going stale then is news (a warning), before it is not.
        self._was_fresh = False
        self._frames = MarkFrames()
        #: The stream names subscribers hold, replaced whole (read by the cache's thread).
        self._wanted: frozenset[str] = frozenset()
        self._pending: deque[tuple[Subscriber, bytes]] = deque()
        self._market_frames = MarketFrames()
        self._market_snap: MarketSnapshot | None = None
        self.market_stale_reason: str | None = None
        self._market_was_fresh = False
        self._market_stop = threading.Event()
        self._market_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._log = RateLimitedLog(log, 60.0)

    # -- the loop's side ---------------------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start on ``loop``: from now on a changed view is delivered, and the 1 s housekeeping runs."""
        self._loop, self.closing = loop, False
        self._tick()
        if self.market is not None:
            self._market_thread = threading.Thread(target=self._market_loop, name="market-stream", daemon=True)
            self._market_thread.start()

    def _market_loop(self) -> None:
        """Polls the market document (the file's reader parses it on this thread, never on the loop)."""
        assert self.market is not None
        while not self._market_stop.wait(MARKET_POLL_S):
            try:
                snap = self.market.get()
                if snap is self._market_snap:
                    continue
                self._market_snap = snap
                wanted = self._wanted
                frames = self._market_frames.update(snap, wanted, self.deflaters > 0) if wanted else []
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._arrived_market, frames)
            except RuntimeError:  # the loop closed meanwhile (shutdown)
                return
            except Exception:  # the streams must outlive any surprise; the next poll retries
                log.exception("market stream update failed")

    def notify(self) -> None:
        """On the state cache's thread, after its view changed: the frames are built here, off the event loop
        (~8 ms for 700 symbols: the records' check, the rows, one compression), and handed to the loop to be
        written, batch by batch as they are made."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        view, now, wanted = self.cache.view, self.clock(), self._wanted
        batches = self._frames.batches(view, now, wanted, self.stale_after_s, self.deflaters > 0) if wanted else ()
        try:
            sent = False
            for batch in batches:  # the small frames go while the all-market one is made
                loop.call_soon_threadsafe(self._arrived, list(batch.items()))
                sent = True
            if not sent:  # judged at once all the same: a view that went stale closes its subscribers now
                loop.call_soon_threadsafe(self._arrived, [])
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    def detach(self) -> None:
        self._market_stop.set()
        if self._market_thread is not None:
            self._market_thread.join(5)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _arrived_market(self, frames: list[tuple[str, Payload]]) -> None:
        self._judge_market(self.clock())
        if self.market_stale_reason is None:
            self._queue(frames)

    def _arrived(self, frames: list[tuple[str, Payload]]) -> None:
        self._judge(self.clock())
        if self.stale_reason is None:
            self._queue(frames)

    def _queue(self, frames: list[tuple[str, Payload]]) -> None:
        if not frames:
            return
        start = not self._pending
        for name, frame in frames:  # per-symbol streams first: small frames, no reason to wait
            holders = self.index.get(name)
            if holders:
                self._pending.extend((s, frame.frame(s.combined, s.deflate)) for s in holders)
        if start and self._pending:
            self._write_batch()

    def _write_batch(self) -> None:
        """Write up to :data:`WRITE_BATCH` frames, then let the loop serve HTTP before the next batch: writing a
        frame of 700 rows to 500 subscribers takes ~20 ms of kernel time, which would otherwise hold every HTTP
        answer back that long."""
        pending = self._pending
        for _ in range(min(WRITE_BATCH, len(pending))):
            subscriber, frame = pending.popleft()
            if subscriber.send_frame(frame):
                self.counters.delivered += 1
                self.counters.compressed += frame[0] == 0xC1
        if pending and self._loop is not None:
            self._loop.call_soon(self._write_batch)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._timer = loop.call_later(1.0, self._tick)
        now = self.clock()
        self._judge(now)
        self._judge_market(now)
        mono = time.monotonic()
        for subscriber in list(self.sockets):
            if mono - subscriber.opened_at >= self.max_lifetime_s:
                subscriber.close(1000, "Connection lifetime of 24 hours reached")
            elif mono - subscriber.last_heard >= self.pong_timeout_s:
                subscriber.close(1011, "No pong within the keep-alive timeout")
            elif mono - subscriber.last_ping >= self.ping_interval_s:
                subscriber.ping()

    def _judge(self, now: float) -> None:
        """Fresh or stale, from the view; on becoming stale every connection is closed (see the module)."""
        if self.closing:
            return
        reason = self.problem(now)
        was, self.stale_reason = self.stale_reason, reason
        if reason is None:
            if was is not None:
                log.info("local WebSocket: data fresh%s, accepting subscribers", " again" * self._was_fresh)
            self._was_fresh = True
            return
        if was is None and self._was_fresh:
            log.warning("local WebSocket: %s; new connections get 503 and %d open ones were closed with 1013 "
                        "until the data is fresh", reason, sum(s.open for s in self.sockets))
        elif was is None:  # at start: the API says the same (503) until the daemon's first frame
            log.info("local WebSocket: %s; new connections get 503 until there is", reason)
        self._close_stale([s for s in self.sockets if s.open], reason)

    @property
    def market_ready(self) -> bool:
        """The market document has been looked at and its streams can be served."""
        return self._market_snap is not None and self.market_stale_reason is None

    def _judge_market(self, now: float) -> None:
        """The market streams' own stale rule: a connection holding a kline or ticker stream whose data is stale
        is closed with 1013, as for mark prices."""
        snap = self._market_snap
        if self.market is None or snap is None or self.closing:
            return
        reason = snap.problem(now, self.stale_after_s)
        was, self.market_stale_reason = self.market_stale_reason, reason
        if reason is None:
            if was is not None:
                log.info("local WebSocket: klines and tickers fresh%s", " again" * self._market_was_fresh)
            self._market_was_fresh = True
            return
        holders = {s for name, subs in self.index.items() if name == ALL_TICKERS or name.endswith("@kline_1h")
                   for s in subs if s.open}
        if was is None and self._market_was_fresh:
            log.warning("local WebSocket: %s; %d connections holding kline or ticker streams were closed with "
                        "1013", reason, len(holders))
        self._close_stale(holders, reason)

    def _close_stale(self, subscribers: Iterable[Subscriber], reason: str) -> None:
        """Close with 1013 and the reason (a close reason holds at most 123 bytes)."""
        close_reason = ("Try again later: " + reason).encode()[:123].decode(errors="ignore")
        for subscriber in subscribers:
            self.counters.closed_stale += 1
            subscriber.close(CLOSE_STALE, close_reason)

    def problem(self, now: float) -> str | None:
        """Why the data cannot be streamed now, or ``None``."""
        view = self.cache.view
        snap = view.snapshot
        if snap is None:
            return f"state unavailable: {view.error.reason if view.error else 'missing'}"
        if not snap.daemon_alive(now):
            return "the funding daemon is not running"
        updated = view.updated_sorted
        if not updated:
            return "no mark price yet"
        age = now - updated[-1]
        if age > self.stale_after_s:
            return f"the newest mark price is {age:.0f} s old (upstream stalled or disconnected)"
        return None

    # -- subscribers -------------------------------------------------------------------------------------------
    def admit(self, streams: Sequence[Stream] = ()) -> tuple[int, dict[str, Any]] | None:
        """``None`` when a new connection for ``streams`` may open; else the HTTP status and JSON detail that
        refuse it."""
        self._judge(self.clock())
        market_stale = self.market_stale_reason if any(s.kind != "mark" for s in streams) else None
        if self.stale_reason is not None or market_stale is not None:
            self.counters.refused_stale += 1
            return 503, {"error": "Data stale", "reason": self.stale_reason or market_stale,
                         "retryAfterSeconds": 5}
        if len(self.sockets) >= self.max_connections:
            self.counters.refused_full += 1
            self._log.warning("ws_full", f"{len(self.sockets)} local WebSocket connections: new ones get 503 "
                                         "(FUNDING_WS_MAX_CONNECTIONS)")
            return 503, {"error": "Too many WebSocket connections", "max": self.max_connections,
                         "retryAfterSeconds": 5}
        return None

    def add(self, subscriber: Subscriber) -> None:
        self.sockets.add(subscriber)
        self.deflaters += subscriber.deflate

    def subscribe(self, subscriber: Subscriber, streams: list[Stream]) -> None:
        fresh = False
        for stream in streams:
            holders = self.index.get(stream.name)
            if holders is None:
                holders = self.index[stream.name] = set()
                fresh = True
            holders.add(subscriber)
        if fresh:
            self._wanted = frozenset(self.index)

    def unsubscribe(self, subscriber: Subscriber, streams: list[Stream]) -> None:
        gone = False
        for stream in streams:
            holders = self.index.get(stream.name)
            if holders is not None:
                holders.discard(subscriber)
                if not holders:
                    del self.index[stream.name]
                    gone = True
        if gone:
            self._wanted = frozenset(self.index)

    def remove(self, subscriber: Subscriber, streams: list[Stream]) -> None:
        if subscriber in self.sockets:
            self.sockets.discard(subscriber)
            self.deflaters -= subscriber.deflate
        self.unsubscribe(subscriber, streams)

    def dropped_slow(self) -> None:
        self.counters.dropped_slow += 1
        self._log.warning("ws_slow", f"a local WebSocket subscriber left more than {self.max_buffer_bytes // 1024} "
                                     "KB unread: dropped (FUNDING_WS_MAX_BUFFER_KB)")
