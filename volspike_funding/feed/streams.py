"""Which listed symbols need a stream of their own, and what to send a connection so that it carries them.

Binance documents that ``!markPrice@arr@1s`` leaves out TradFi perpetuals (on 2026-10-07 it held 715 USDⓈ-M rows
while exchangeInfo listed 924 symbols). Every symbol exchangeInfo lists as ``TRADING`` that the all-market frames
have not carried within ``WINDOW_S`` gets ``<symbol>@markPrice@1s`` on the same connection, through
``SUBSCRIBE`` — so data still comes only from the WebSocket. Limits (Binance's documentation): 1024 streams per
connection (one is the all-market stream) and 10 incoming messages per second; we send at most
``MESSAGES_PER_S`` and ``PARAMS_PER_MESSAGE`` streams per message. Pure bookkeeping: the daemon does the I/O.

Per-symbol streams must never cost the all-market one. Binance answers a bad or too fast ``SUBSCRIBE`` by closing
the connection, the all-market stream with it; sending the same ``SUBSCRIBE`` on every reconnect once turned a
healthy feed into 10 reconnects in 120 s and every symbol stale. A connection that ends within
``REFUSAL_WINDOW_S`` of a ``SUBSCRIBE`` it sent counts as a refusal: no (UN)SUBSCRIBE is sent for a backoff
(``pause_base_s``, doubling to ``PAUSE_CAP_S``), so the next connections carry the all-market stream alone; a
``SUBSCRIBE`` that outlives the window ends the backoff. Health says so while it lasts.

A ``SUBSCRIBE`` counts only once Binance acknowledged it: replies are matched by ``id`` (``{"result": null, "id":
7}``). One answered with an error (``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 7}``, or the flat
``{"code": 2, "msg": ...}`` Binance's docs print), or not answered within ``reply_timeout_s``, leaves its symbols
out; they are asked for again after a backoff (``reply_timeout_s``, doubling to ``RETRY_CAP_S``), and health and
``/metrics`` say so meanwhile. The connection stays: an error reply is Binance's answer to one message, not a
reason to drop the all-market stream.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, NamedTuple

from volspike_funding.binance.wire import subscription_message, symbol_stream
from volspike_funding.core.retry import Backoff

log = logging.getLogger("funding.daemon")

MAX_STREAMS_PER_CONNECTION = 1024
#: Half of Binance's 10 incoming messages per second, so pongs and our own timing jitter never reach it.
MESSAGES_PER_S = 5.0
PARAMS_PER_MESSAGE = 200
#: A symbol the all-market frames carried within this long (of the stream flowing) is theirs; the rest need their
#: own stream.
WINDOW_S = 30.0
#: All-market frames to see before deciding (one frame may be partial: TradFi rows come in a message of their own).
MIN_FRAMES = 3
#: A longer pause between all-market frames is a stall, not coverage: it does not age anybody, and no plan is made
#: during it (a stall is the watchdog's business; subscribing every symbol one by one would not help).
GAP_S = 3.0
#: A connection ending this soon after sending a SUBSCRIBE was closed because of it.
REFUSAL_WINDOW_S = 5.0
PAUSE_CAP_S = 1800.0
#: The longest wait before asking again for streams Binance refused or never acknowledged.
RETRY_CAP_S = 300.0
#: Symbols named in health and the state document (the counts are whole).
EXAMPLES = 10


class ExtraStreams:
    """The all-market stream's coverage, and the symbols that must be subscribed one by one.

    Coverage is measured on the stream's own clock, which runs only while all-market frames flow: a symbol is
    missing when the frames of ``WINDOW_S`` seconds of flow did not carry it, however long the stream stalled."""

    def __init__(self, window_s: float = WINDOW_S, gap_s: float = GAP_S) -> None:
        self._window_s = window_s
        self._gap_s = gap_s
        self._seen: dict[str, float] = {}
        #: Seconds the all-market stream has flowed, at its last frame, and the monotonic time of that frame.
        self._flowed = 0.0
        self._last_frame: float | None = None
        self.frames = 0
        #: Symbols needing a stream beyond what one connection carries (not served), and the first few of them.
        self.capped = 0
        self.left_out: list[str] = []

    def note_all_market(self, symbols: Iterable[str], mono: float) -> None:
        if self._last_frame is not None:
            self._flowed += min(max(mono - self._last_frame, 0.0), self._gap_s)
        self._last_frame = mono
        seen, flowed = self._seen, self._flowed
        for symbol in symbols:
            seen[symbol] = flowed
        self.frames += 1

    def flowing(self, mono: float) -> bool:
        return self._last_frame is not None and mono - self._last_frame <= self._gap_s

    def wanted(self, trading: Iterable[str], mono: float) -> set[str] | None:
        """Symbols needing their own stream, or ``None`` when that cannot be told now: before enough all-market
        frames were seen, or while the all-market stream is not flowing (then the current plan stands)."""
        if self.frames < MIN_FRAMES or not self.flowing(mono):
            return None
        cutoff = self._flowed - self._window_s
        seen = self._seen
        wanted = sorted(s for s in trading if seen.get(s, float("-inf")) < cutoff)
        limit = MAX_STREAMS_PER_CONNECTION - 1
        capped, self.capped = self.capped, max(0, len(wanted) - limit)
        self.left_out = wanted[limit:limit + EXAMPLES]
        if self.capped and self.capped != capped:  # once per change, not every plan (every 5 s)
            log.warning("%d symbols need their own stream, more than one connection carries; %d are not served: "
                        "%s", len(wanted), self.capped, ", ".join(self.left_out))
        return set(wanted[:limit])


class Request(NamedTuple):
    id: int
    method: str
    symbols: tuple[str, ...]
    message: str


class Subscriptions:
    """One connection's per-symbol streams: planned (sent or queued), acknowledged by Binance, and refused."""

    def __init__(self, stream_of: Callable[[str], str] = symbol_stream) -> None:
        #: A symbol's stream name (``<symbol>@markPrice@1s`` here, ``<symbol>@kline_1h`` on the market feed).
        self.stream_of = stream_of
        #: Symbols planned for this connection: queued, sent, acknowledged, or refused and waiting to be asked again.
        self.symbols: set[str] = set()
        self.confirmed: set[str] = set()
        #: Refused or never acknowledged: left out until the manager releases them for another SUBSCRIBE.
        self.held: set[str] = set()
        self._queue: list[Request] = []
        self._sent: dict[int, tuple[Request, float]] = {}
        self._next_id = 1
        self._last_send = float("-inf")
        #: Monotonic time the last SUBSCRIBE was handed out for sending (``None``: none yet).
        self.last_subscribe: float | None = None

    def plan(self, wanted: set[str]) -> tuple[int, int]:
        """Queue the (UN)SUBSCRIBE messages that turn the current set into ``wanted``; returns (added, removed)."""
        add, remove = sorted(wanted - self.symbols), sorted(self.symbols - wanted)
        for method, names in (("UNSUBSCRIBE", remove), ("SUBSCRIBE", add)):
            for i in range(0, len(names), PARAMS_PER_MESSAGE):
                chunk = tuple(names[i:i + PARAMS_PER_MESSAGE])
                message = subscription_message(method, [self.stream_of(s) for s in chunk], self._next_id)
                self._queue.append(Request(self._next_id, method, chunk, message))
                self._next_id += 1
        self.symbols = set(wanted)
        self.confirmed &= self.symbols  # an unsubscribed stream is not counted while its reply is on the way
        self.held &= self.symbols
        return len(add), len(remove)

    def next_message(self, mono: float) -> str | None:
        """The next message to send now, keeping under ``MESSAGES_PER_S``; ``None`` when nothing is due."""
        if not self._queue or mono - self._last_send < 1.0 / MESSAGES_PER_S:
            return None
        self._last_send = mono
        request = self._queue.pop(0)
        self._sent[request.id] = (request, mono)
        if request.method == "SUBSCRIBE":
            self.last_subscribe = mono
        return request.message

    def reply(self, request_id: int | None, error: str | None) -> Request | None:
        """Binance's answer to a request (``error``: its error text; ``request_id`` ``None``: an error naming no id,
        taken to answer the oldest request still unanswered). Returns the SUBSCRIBE it answered, if it was one: when
        refused, its symbols are now held back. An UNSUBSCRIBE refused leaves a stream we no longer want: harmless."""
        if request_id is None and error is not None:
            request_id = min(self._sent, default=None)
        request = self._sent.pop(request_id)[0] if request_id in self._sent else None
        if request is None or request.method != "SUBSCRIBE":
            return None
        names = set(request.symbols) & self.symbols
        if error is None:
            self.confirmed |= names
        else:
            self.held |= names
        return request

    def overdue(self, mono: float, timeout_s: float) -> list[Request]:
        """SUBSCRIBEs unanswered for ``timeout_s``: given up on, their symbols held back."""
        late = [r for r, sent in self._sent.values() if mono - sent > timeout_s]
        for request in late:
            del self._sent[request.id]
            if request.method == "SUBSCRIBE":
                self.held |= set(request.symbols) & self.symbols
        return [r for r in late if r.method == "SUBSCRIBE"]

    def release(self) -> None:
        """Let the held symbols be planned (and so subscribed) again."""
        self.symbols -= self.held
        self.held.clear()

    @property
    def pending(self) -> int:
        return len(self._queue)


#: How often the wanted set is recomputed (and at once when the reference data changes).
PLAN_EVERY_S = 5.0


class StreamManager:
    """Keeps every open connection subscribed to the symbols that need their own stream."""

    def __init__(self, pause_base_s: float = 30.0, reply_timeout_s: float = 10.0) -> None:
        self.coverage = ExtraStreams()
        self.wanted: set[str] | None = None
        self._last_plan = float("-inf")
        self._pause = Backoff(min(pause_base_s, PAUSE_CAP_S), PAUSE_CAP_S)
        self.refusals = 0
        #: Until when (monotonic) nothing is (un)subscribed, and why; ``None``: not paused.
        self.paused_until: float | None = None
        self.refusal: str | None = None
        self._refused_at = float("-inf")
        self._reply_timeout_s = reply_timeout_s
        self._retry = Backoff(min(reply_timeout_s, RETRY_CAP_S), RETRY_CAP_S)
        #: Why streams Binance refused (or left unanswered) are held back, until one SUBSCRIBE is acknowledged.
        self.failing: str | None = None
        self._retry_at: float | None = None
        self._primary: Subscriptions | None = None

    def replied(self, conn: Any, request_id: int | None, error: str | None, mono: float) -> None:
        """Binance answered a request on ``conn`` (``error``: it refused it)."""
        subs: Subscriptions = conn.subs
        answered = subs.reply(request_id, error)
        if answered is None:
            return
        if error is not None:
            self._failed(f"Binance answered SUBSCRIBE {answered.id} with {error}", len(answered.symbols), mono)
        elif self.failing is not None and not subs.held:
            log.info("per-symbol subscriptions acknowledged again after %d failures", self._retry.failures)
            self.failing, self._retry_at = None, None
            self._retry.reset()

    def _failed(self, why: str, streams: int, mono: float) -> None:
        delay = self._retry.next()
        self._retry_at = mono + delay
        self.failing = f"{why} ({streams} streams); asked again in {delay:.0f} s (failure {self._retry.failures})"
        log.warning("per-symbol subscriptions failing: %s", self.failing)

    def replan(self) -> None:
        self._last_plan = float("-inf")

    def closed(self, conn: Any, mono: float, reason: str) -> None:
        """A connection ended: if the server closed it before a SUBSCRIBE it sent outlived ``REFUSAL_WINDOW_S``,
        pause them all. One we aborted ourselves (the watchdog, a rotation, a stop) refused nothing."""
        sent = conn.subs.last_subscribe
        if sent is None or mono - sent > REFUSAL_WINDOW_S or conn.aborting:
            return
        self.refusals += 1
        self._refused_at = mono
        delay = self._pause.ceiling(self.refusals)
        self.paused_until = mono + delay
        self.refusal = (f"the connection was closed {mono - sent:.1f} s after a SUBSCRIBE ({reason}); per-symbol "
                        f"streams paused for {delay:.0f} s (refusal {self.refusals}), the all-market stream goes on")
        log.warning("%s", self.refusal)

    def status(self, mono: float) -> dict[str, Any]:
        """For the state document: streams wanted, and why they are paused (while they are)."""
        paused = self.paused_until is not None and mono < self.paused_until
        primary, coverage = self._primary, self.coverage
        return {"perSymbolStreams": len(primary.confirmed) if primary is not None else 0,
                "perSymbolStreamsWanted": len(self.wanted or ()),
                "subscriptionsPaused": self.refusal if paused else None,
                "subscriptionsPausedForS": round(self.paused_until - mono, 1) if paused and self.paused_until
                else None,
                "subscriptionsFailing": self.failing,
                "heldStreams": len(primary.held) if primary is not None else 0,
                "leftOutStreams": coverage.capped, "leftOutExamples": coverage.left_out if coverage.capped else []}

    def _check_accepted(self, connections: list[Any], mono: float) -> None:
        # Only a SUBSCRIBE sent after the last refusal proves anything: an older connection's says nothing.
        if self.refusals and any((sent := c.subs.last_subscribe) is not None and sent > self._refused_at
                                 and mono - sent > REFUSAL_WINDOW_S for c in connections):
            log.info("per-symbol subscriptions accepted again after %d refusals", self.refusals)
            self.refusals, self.refusal, self.paused_until = 0, None, None

    def tick(self, connections: Iterable[Any], trading: frozenset[str] | None, mono: float) -> None:
        """``connections``: the daemon's open ones (each has ``subs`` and ``send``); ``trading``: the listed,
        trading symbols, or ``None`` while the reference data is unknown (then nothing is subscribed)."""
        connections = list(connections)
        self._primary = connections[0].subs if connections else None
        if trading is None:
            return
        self._check_accepted(connections, mono)
        for conn in connections:
            for late in conn.subs.overdue(mono, self._reply_timeout_s):
                self._failed(f"no reply to SUBSCRIBE {late.id} within {self._reply_timeout_s:g} s",
                             len(late.symbols), mono)
        if self._retry_at is not None and mono >= self._retry_at:
            self._retry_at = None
            for conn in connections:
                conn.subs.release()
        if self.paused_until is not None and mono < self.paused_until:
            return  # nothing sent: the all-market stream must not be closed again with it
        if self.wanted is None or mono - self._last_plan >= PLAN_EVERY_S:
            self._last_plan = mono
            wanted = self.coverage.wanted(trading, mono)
            if wanted is not None:
                self.wanted = wanted
        for conn in connections:
            subs: Subscriptions = conn.subs
            if self.wanted is not None and subs.symbols != self.wanted:
                added, removed = subs.plan(self.wanted)
                log.info("per-symbol streams on connection %s: +%d -%d, %d in all (symbols the all-market "
                         "stream does not carry)%s", conn.id, added, removed, len(self.wanted),
                         f": {', '.join(sorted(self.wanted)[:10])}" if added else "")
            message = subs.next_message(mono)
            if message is not None and not conn.send(message):
                log.warning("could not send a subscription on connection %s; it is being replaced", conn.id)
