"""One WebSocket connection to Binance, owned by one thread that does nothing but receive.

The thread turns what happens on the socket into :class:`Event` objects on a queue; all parsing and all decisions
(watchdog, backoff, rotation) happen in the daemon's main loop. Pings from Binance are answered by
websocket-client inside ``recv_data`` itself, so keeping the reader busy is what keeps the connection alive.
"""

from __future__ import annotations

import itertools
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import websocket

from volspike_funding.core.retry import LONGEST_WAIT_S, parse_retry_after
from volspike_funding.core.settings import Settings
from volspike_funding.core.version import __version__

from volspike_funding.feed.streams import Subscriptions

log = logging.getLogger("funding.daemon")

OPEN, FRAME, CLOSED, REFERENCE = "open", "frame", "closed", "reference"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Event:
    """What happened on a connection (``conn``), or a reference-data result (``REFERENCE``, ``conn`` is None)."""

    conn: "Connection | None"
    kind: str
    at: float
    data: bytes = b""
    reason: str = ""
    retry_after: float | None = None
    payload: Any = field(default=None, compare=False)


def describe(exc: BaseException) -> tuple[str, float | None]:
    """A one-line reason for a failed or lost connection, and the server's usable ``Retry-After`` if it sent one."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        headers = exc.resp_headers or {}
        raw = headers.get("retry-after") or headers.get("Retry-After")
        # Capped loosely here; the daemon holds it to its own backoff cap (and logs what the server asked).
        retry_after = parse_retry_after(raw, LONGEST_WAIT_S)
        ignored = f" (unusable Retry-After {raw[:20]!r} ignored)" if raw is not None and retry_after is None else ""
        return f"handshake refused: HTTP {exc.status_code}{ignored}", retry_after
    if isinstance(exc, (websocket.WebSocketTimeoutException, socket.timeout)):
        return "timed out", None
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "connection closed by peer", None
    if isinstance(exc, websocket.WebSocketAddressException):  # wraps the resolver's gaierror
        inner = exc.args[0] if exc.args else None
        return f"DNS lookup failed: {getattr(inner, 'strerror', None) or exc}", None
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror, None
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None


def cannot_connect(url: str, exc: BaseException, reason: str) -> str:
    """The reason for a connection never made: it names the host, with a hint (a fresh droplet without DNS or
    outbound 443 logged only "disconnected: Name or service not known"). A refused handshake is left as it is:
    the server answered, so the network is not the cause."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return reason
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    return f"cannot connect to {parts.hostname}: {reason} (check DNS and that outbound TCP {port} is allowed)"


class Connection:
    """Connect, then push every received text frame to ``events`` until the socket ends or is aborted."""

    def __init__(self, url: str, events: "queue.Queue[Event]", *, connect_timeout: float, idle_timeout: float,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.id = next(_ids)
        self.url = url
        self._events = events
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._ws: websocket.WebSocket | None = None
        self._abort_reason: str | None = None
        self.started = monotonic()
        self.opened: float | None = None
        self.last_data: float | None = None
        #: Monotonic time of the last all-market frame with data (the no-data watchdog's signal).
        self.last_all_market: float | None = None
        #: Per-symbol streams of this connection (managed by the daemon's loop).
        self.subs = Subscriptions()
        self._thread = threading.Thread(target=self._run, name=f"binance-ws-{self.id}", daemon=True)

    @classmethod
    def for_settings(cls, settings: Settings, events: "queue.Queue[Event]", *, clock: Callable[[], float],
                     monotonic: Callable[[], float]) -> "Connection":
        """The daemon's connection to ``settings.ws_url``; a socket idle for three watchdog periods (at least 30 s)
        is dead even if the watchdog is looking elsewhere."""
        return cls(settings.ws_url, events, connect_timeout=settings.connect_timeout_s,
                   idle_timeout=max(3 * settings.no_data_timeout_s, 30.0), clock=clock, monotonic=monotonic)

    def start(self) -> "Connection":
        self._thread.start()
        return self

    @property
    def aborting(self) -> bool:
        return self._abort_reason is not None

    def abort(self, reason: str, *, polite: bool = False) -> None:
        """End the connection from any thread; the reader thread then reports ``CLOSED`` with ``reason``."""
        with self._lock:
            if self._abort_reason is not None:
                return
            self._abort_reason = reason
            ws = self._ws
        if ws is None:
            return  # still connecting: the reader sees the abort as soon as the handshake returns
        if polite:
            try:
                ws.send_close(websocket.STATUS_NORMAL)
            except (OSError, websocket.WebSocketException):
                pass
        try:
            if ws.sock is not None:
                ws.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, text: str) -> bool:
        """Send a text message from the daemon's loop (websocket-client serialises it with the reader's pongs)."""
        with self._lock:
            ws = self._ws
        if ws is None or self._abort_reason is not None:
            return False
        try:
            ws.send(text)
            return True
        except (OSError, websocket.WebSocketException):
            return False

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _emit(self, kind: str, **fields: object) -> None:
        self._events.put(Event(self, kind, self._clock(), **fields))  # type: ignore[arg-type]

    def _run(self) -> None:
        reason, retry_after, connected = "", None, False
        try:
            ws = websocket.create_connection(
                self.url, timeout=self._connect_timeout, skip_utf8_validation=True, enable_multithread=True,
                header={"User-Agent": f"volspike-funding/{__version__}"})
            connected = True
            with self._lock:
                self._ws = ws
                aborted = self._abort_reason is not None
            if aborted:
                ws.shutdown()
                return
            # A generous socket timeout only bounds the thread's life; the daemon's no-data watchdog is tighter.
            ws.settimeout(self._idle_timeout)
            self._emit(OPEN)
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    text = data[2:].decode("utf-8", "replace")
                    reason = f"server closed the connection (code {code}{': ' + text if text else ''})"
                    break
                if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    self._emit(FRAME, data=data)
        except Exception as exc:  # every way a socket can end is a reason to reconnect, reported once
            reason, retry_after = describe(exc)
            if not connected:
                reason = cannot_connect(self.url, exc, reason)
        finally:
            with self._lock:
                ws_final, self._ws = self._ws, None
            if ws_final is not None:
                ws_final.shutdown()
            self._emit(CLOSED, reason=self._abort_reason or reason, retry_after=retry_after)


def warn_legacy_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.hostname == "fstream.binance.com" and not parts.path.startswith("/market"):
        log.warning("BINANCE_WS_URL uses a legacy path: since 2026-04-23 Binance sends mark prices only under "
                    "wss://fstream.binance.com/market/...; expect the no-data watchdog to fire")
