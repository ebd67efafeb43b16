"""The API's HTTP connection policy: uvicorn's h11 protocol plus the limits uvicorn lacks, and how it is started.

uvicorn never closes a connection that sends nothing, or sends its request head a byte at a time (its keep-alive
timer is cancelled by any byte received), and it holds idle connections without limit. Measured before this
module: 1,100 idle local connections under systemd's default 1,024 descriptors made every request time out.
Here, per connection:

- a request head must be complete within ``FUNDING_API_HEADER_TIMEOUT_S`` of the connection opening or of the
  previous response; otherwise the connection is closed (idle and slowloris clients cost one timer each);
- beyond ``FUNDING_API_MAX_CONNECTIONS`` open connections a new one gets an immediate 503 and is closed, so the
  process never runs out of descriptors and a real client is told at once instead of hanging;
- a request head larger than :data:`MAX_HEAD_BYTES` (200 KiB, above the largest batch URL the schema allows) is
  answered 431 (h11's default, 16 KiB, left longer URLs without any answer);
- an answer the client does not read is bounded twice: when its unread bytes stay above the transport's high-water
  mark for ``FUNDING_API_WRITE_TIMEOUT_S`` the connection is aborted, and the unread bytes of all such connections
  together never exceed ``FUNDING_API_MAX_BUFFERED_MB`` (the connection that would exceed it is aborted at once).
  ``close()`` waits for unread data to flush, so without this a client that never reads kept its answer in memory
  for ever (measured: 4,000 such clients of exchangeInfo, 830 KB each, took the API from 68 MB to 1,214 MB);
- protocol errors answer the API's JSON error shape;
- a WebSocket upgrade of ``/market/stream`` or ``/market/ws/...`` (and ``/public``, ``/private``) hands the transport to
  :class:`~volspike_funding.api.stream_socket.StreamSocket` (the local Binance-compatible streams), with the head
  timer cancelled; any other upgrade request is answered as plain HTTP (uvicorn's own WebSocket stack is not used).

At start the soft descriptor limit is raised to the hard one (the unit sets ``LimitNOFILE=``), and a failing
``accept()`` (descriptors exhausted anyway) is logged once a minute instead of with a traceback each time.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from volspike_funding.api.stream_hub import StreamHub
from volspike_funding.api.stream_socket import StreamSocket, stream_category
from volspike_funding.core.logs import RateLimitedLog

log = logging.getLogger("funding.api")

#: Above the longest batch URL the schema allows: 16,000 characters, each up to 12 bytes percent-encoded.
MAX_HEAD_BYTES = 200 * 1024
#: The kernel's send buffer per connection: a loopback client reads 830 KB of exchangeInfo in a few round trips.
SEND_BUFFER_BYTES = 256 * 1024
#: Descriptors kept free beyond the connection cap (the state file, inotify, logging, the listening socket).
FD_HEADROOM = 64


def _error_bytes(status: int, reason: str, error: str) -> bytes:
    body = orjson.dumps({"detail": {"error": error}})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


OVERLOADED = _error_bytes(503, "Service Unavailable", "Too many connections; please retry")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline, a connection cap and JSON protocol errors."""

    header_timeout_s = 5.0
    max_connections = 4096
    write_timeout_s = 10.0
    max_buffered_bytes = 64 * 1024 * 1024
    #: The connections whose unread answers are above the high-water mark, one set per configured class (server).
    stalled: set["GuardedH11Protocol"] = set()
    #: The local WebSocket's hub (``None``: FUNDING_WS_ENABLED=false, upgrades are answered as plain HTTP).
    stream_hub: StreamHub | None = None
    stream_market = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # h11 writes a response's head and body separately: without TCP_NODELAY, Nagle's algorithm holds the
            # body until the client's delayed ACK, 40 ms later on every keep-alive request (measured: 44 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A fixed kernel send buffer: autotuned, it grows to tcp_wmem's 4 MB per connection, where unread
            # answers escape the budget below (and still cost the droplet's memory).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        if len(self.connections) > self.max_connections:
            _overload_log.warning("overloaded", f"more than {self.max_connections} open connections: new ones "
                                                f"get 503 (FUNDING_API_MAX_CONNECTIONS)")
            transport.write(OVERLOADED)
            transport.close()
            return
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # nothing to answer: no request head arrived in time

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._cancel_head_timer()  # a request head arrived: the app's own time starts now

    def _should_upgrade(self) -> bool:
        return (self.stream_hub is not None and self._get_upgrade() == b"websocket"
                and stream_category(self.scope["path"]) is not None)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """The transport goes to a :class:`StreamSocket`, which reads the handshake from the request replayed."""
        assert self.stream_hub is not None
        self._cancel_head_timer()
        self._cancel_write_timer()
        type(self).stalled.discard(self)
        self.connections.discard(self)
        # websockets' parser gets the head with a short target: it caps a line at 8 KiB, and a combined URL of
        # 1,024 streams is about 25 KB (h11 already read the head within MAX_HEAD_BYTES).
        head = [event.method, b" / HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        trailing = self.conn.trailing_data[0]
        protocol = StreamSocket(self.stream_hub, self.connections, event.target.decode("ascii", "replace"),
                                self.stream_market)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(b"".join(head) + bytes(trailing))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head gets the same deadline

    def pause_writing(self) -> None:
        """asyncio: this connection's unread answer is above the high-water mark (the client is not reading)."""
        super().pause_writing()
        stalled = type(self).stalled
        stalled.add(self)
        held = sum(p.transport.get_write_buffer_size() for p in stalled)
        if held > self.max_buffered_bytes:
            _slow_log.warning("slow_readers", f"{len(stalled)} connections hold {held / 1e6:.0f} MB of unread "
                                              f"answers: dropping the newest (FUNDING_API_MAX_BUFFERED_MB)")
            self._drop()
            return
        self._cancel_write_timer()
        self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()
        type(self).stalled.discard(self)

    def _cancel_write_timer(self) -> None:
        timer = getattr(self, "_write_timer", None)
        if timer is not None:
            timer.cancel()
            self._write_timer = None

    def _write_timeout(self) -> None:
        self._write_timer = None
        _slow_log.warning("slow_reader", f"an answer was not read for {self.write_timeout_s:g} s: connection "
                                         "dropped (FUNDING_API_WRITE_TIMEOUT_S)")
        self._drop()

    def _drop(self) -> None:
        """Abort, not close: ``close()`` would keep the unread bytes until the client reads them."""
        self._cancel_write_timer()
        type(self).stalled.discard(self)
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_write_timer()
        type(self).stalled.discard(self)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        too_large = len(self.conn.trailing_data[0]) >= MAX_HEAD_BYTES
        status, reason, error = ((431, "Request Header Fields Too Large", "Request head too large") if too_large
                                 else (400, "Bad Request", "Invalid HTTP request"))
        body = orjson.dumps({"detail": {"error": error}})
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass
        self.transport.close()


_overload_log = RateLimitedLog(log, 60.0)
_accept_log = RateLimitedLog(log, 60.0)
_slow_log = RateLimitedLog(log, 60.0)


def protocol_class(header_timeout_s: float, max_connections: int, write_timeout_s: float = 10.0,
                   max_buffered_mb: float = 64.0, stream_hub: StreamHub | None = None,
                   stream_market: bool = False) -> type[GuardedH11Protocol]:
    return type("ConfiguredH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": header_timeout_s, "max_connections": max_connections,
                 "write_timeout_s": write_timeout_s, "max_buffered_bytes": int(max_buffered_mb * 1024 * 1024),
                 "stalled": set(), "stream_hub": stream_hub, "stream_market": stream_market})


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what the unit's ``LimitNOFILE=`` grants); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def effective_max_connections(configured: int, fd_limit: int) -> int:
    return max(1, min(configured, fd_limit - FD_HEADROOM))


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports a failing ``accept()`` (EMFILE, ENFILE, ENOBUFS) through the loop's exception handler, with a
    traceback, every time it retries: one line a minute, with a count, instead."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")).lower() + repr(context):
            _accept_log.warning("accept_failed", f"cannot accept connections: {exc.strerror or exc} "
                                                 "(descriptors exhausted? see LimitNOFILE and "
                                                 "FUNDING_API_MAX_CONNECTIONS)")
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
