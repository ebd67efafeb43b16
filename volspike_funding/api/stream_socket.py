"""One local WebSocket connection on ``/market/stream`` or ``/market/ws/<stream>``: the handshake, the client's
requests and the writes, as an asyncio protocol that takes the transport over from the HTTP protocol at the
upgrade (:meth:`~volspike_funding.api.protocol.GuardedH11Protocol.handle_websocket_upgrade`).

websockets' sans-I/O ``ServerProtocol`` parses the handshake and the client's frames (pings answered, close
handshake, size limit); data frames go out as the hub's pre-built bytes, written straight to the transport, so a
frame is serialised once however many subscribers it has — and compressed once, for the clients that negotiated
permessage-deflate (:func:`deflate_offer`). A handshake the service refuses gets an HTTP status and the API's JSON
error body (``{"detail": {"error", "reason", ...}}``), which client libraries report.

Endpoints (Binance's, under ``/market`` as since 2026-04-23): ``/market/stream?streams=a/b`` (payloads wrapped
``{"stream", "data"}``) and ``/market/ws/<stream>`` (raw). A path segment after ``/market/ws/`` that is not a stream
name at all is ignored, as Binance does (ccxt connects to ``/market/ws/0`` and subscribes after); a named
stream the service does not serve is refused with 400, never accepted and left silent. ``/public/...`` and
``/private/...`` handshakes are accepted with nothing on them (Binance's SDK opens all three categories at once);
a stream asked of them is refused with an error frame naming ``/market``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from volspike_funding.api.stream_frames import DEFLATE_WINDOW_BITS
from volspike_funding.api.stream_hub import StreamHub
from volspike_funding.binance.stream_requests import (CLOSE_LIMIT, MAX_STREAMS, RateLimit, Request as ControlRequest,
                                                      Stream, Subscriptions, error, parse_request, parse_streams)

log = logging.getLogger("funding.api")

#: Above the largest request a client needs: SUBSCRIBE with 1,024 stream names is about 30 KB.
MAX_MESSAGE_BYTES = 128 * 1024
#: How long a closing connection may take to read its close frame before it is cut.
CLOSE_GRACE_S = 2.0
#: Binance's routing categories since 2026-04-23. Only ``/market`` carries data here; ``/public`` and ``/private``
#: connections are accepted (Binance's SDK opens all three at once) and any stream asked of them is refused.
CATEGORIES = ("market", "public", "private")


def deflate_offer() -> ServerPerMessageDeflateFactory:
    """permessage-deflate (RFC 7692) for the clients that offer it (ccxt, python-binance, the npm clients do), so
    the all-market arrays travel compressed, made once per frame for all of them: no context takeover on our side,
    so each message stands alone. The client's side is left as it offers: imposing ``client_no_context_takeover``
    fails the handshake of an npm ``ws`` client configured against it, which Binance's hosts accept; what it costs
    is a 32 KB window per connection whose client sends compressed requests, within the connection cap."""
    return ServerPerMessageDeflateFactory(server_no_context_takeover=True, compress_settings={"level": 1})


def stream_category(path: str) -> str | None:
    """The category of a stream endpoint path (``/market/stream``, ``/public/ws/<x>``...), or ``None``."""
    parts = path.split("/", 3)  # "", category, "stream" or "ws", the rest
    if len(parts) < 3 or parts[0] or parts[1] not in CATEGORIES:
        return None
    if parts[2] == "ws" or (parts[2] == "stream" and len(parts) == 3):
        return parts[1]
    return None


def url_streams(path: str, query: str, market: bool) -> tuple[bool, list[Stream]] | str:
    """``(combined, streams)`` named by the URL, or why it is refused."""
    category = stream_category(path) or "market"
    base = f"/{category}"
    if path == base + "/stream":
        names = [n for v in parse_qs(query).get("streams", []) for n in v.split("/") if n]
        combined = True
    else:
        segment = unquote(path[len(base + "/ws/"):]) if path.startswith(base + "/ws/") else ""
        names = [n for n in segment.split("/") if n and ("@" in n or n.startswith("!"))]
        combined = False
    if names and category != "market":
        return off_market(names[0], category)
    streams = parse_streams(list(dict.fromkeys(names)), market)
    if isinstance(streams, str):
        return streams
    if len(streams) > MAX_STREAMS:
        return f"more than {MAX_STREAMS} streams"
    return combined, streams


def off_market(name: Any, category: str) -> str:
    return f"stream {str(name)[:80]!r} is not served on /{category} (this service serves mark prices on /market)"


def json_response(status: int, detail: dict[str, Any]) -> Response:
    body = orjson.dumps({"detail": detail})
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Connection", "close")])
    if "retryAfterSeconds" in detail:
        headers["Retry-After"] = str(detail["retryAfterSeconds"])
    return Response(status, HTTPStatus(status).phrase, headers, body)


class StreamSocket(asyncio.Protocol):
    def __init__(self, hub: StreamHub, connections: set[Any], target: str, market: bool = False) -> None:
        """``target``: the request's path and query as the client sent them."""
        self.hub = hub
        self.connections = connections
        self.target = target
        self.category = stream_category(target.partition("?")[0]) or "market"
        self.market = market
        self.conn = ServerProtocol(max_size=MAX_MESSAGE_BYTES, extensions=[deflate_offer()])
        self.deflate = False
        self.transport: asyncio.Transport | None = None
        self.subs = Subscriptions(combined=False, market=market)
        self.limit = RateLimit()
        self.opened_at = self.last_heard = self.last_ping = time.monotonic()
        self.open = False
        self._fragments: list[bytes] = []
        self._abort_timer: asyncio.TimerHandle | None = None

    @property
    def combined(self) -> bool:
        return self.subs.combined

    # -- asyncio -----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.hub.stalled.discard(self)
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        self.hub.remove(self, list(self.subs.streams.values()))
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
            if self.transport is None or self.transport.is_closing():
                return
        self._flush()

    def eof_received(self) -> bool | None:
        self.conn.receive_eof()
        self._flush()
        return None

    def shutdown(self) -> None:
        """uvicorn at exit: tell the client the server is going away (it reconnects to the next instance). uvicorn
        waits for every connection to end, so one that is not open is cut too."""
        if self.open:
            self.close(1001, "Server restarting")
        else:
            self._close_transport()

    # -- handshake ---------------------------------------------------------------------------------------------
    def _handshake(self, request: Request) -> None:
        path, _, query = self.target.partition("?")
        named = url_streams(path, query, self.market)
        if isinstance(named, str):
            response = json_response(400, {"error": "Stream not served", "reason": named})
        else:
            refused = self.hub.admit(named[1])
            response = json_response(*refused) if refused is not None else self.conn.accept(request)
            if refused is None and response.status_code != 101:
                # websockets' own refusal (a header missing), in the API's JSON shape
                reason = response.body.decode(errors="replace").strip().removeprefix(
                    "Failed to open a WebSocket connection: ")
                response = json_response(response.status_code, {"error": "Invalid WebSocket handshake",
                                                                "reason": reason})
        self.conn.send_response(response)
        self._flush()
        if response.status_code != 101:
            self._close_transport()
            return
        assert not isinstance(named, str)
        self.subs.combined, streams = named
        self.subs.streams.update((s.name, s) for s in streams)
        self.deflate = any(isinstance(e, PerMessageDeflate) and e.local_max_window_bits == DEFLATE_WINDOW_BITS
                           for e in self.conn.extensions)
        self.open = True
        self.hub.add(self)
        self.hub.subscribe(self, streams)

    # -- the client's messages ---------------------------------------------------------------------------------
    def _frame(self, frame: Frame) -> None:
        now = time.monotonic()
        self.last_heard = now
        if frame.opcode is Opcode.CLOSE or not self.open:
            # a close: the protocol answered it, close_expected() ends the connection in _flush; anything after
            # our own close frame is not answered (the protocol would refuse to send)
            return
        if not self.limit.allow(now):
            self.hub.counters.closed_limits += 1
            self.close(CLOSE_LIMIT, "Too many requests")
            return
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            return
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return
        message, self._fragments = b"".join(self._fragments), []
        request = parse_request(message)
        if isinstance(request, bytes):
            self._send_control(request)
            return
        self._control(request)

    def _control(self, request: ControlRequest) -> None:
        if self.category != "market" and request.method == "SUBSCRIBE" and request.params:
            self._send_control(error(2, "Invalid request: " + off_market(request.params[0], self.category),
                                     request.id))
            return
        answer, added, removed, close = self.subs.handle(request)
        if close is not None:
            self.hub.counters.closed_limits += 1
            self.close(*close)
            return
        self.hub.subscribe(self, added)
        self.hub.unsubscribe(self, removed)
        if answer is not None:
            self._send_control(answer)

    def _send_control(self, body: bytes) -> None:
        self.conn.send_text(body)
        self._flush()

    # -- writes ------------------------------------------------------------------------------------------------
    def send_frame(self, frame: bytes) -> bool:
        transport = self.transport
        if not self.open or transport is None or transport.is_closing():
            return False
        transport.write(frame)
        if transport.get_write_buffer_size() > self.hub.max_buffer_bytes:
            self._drop_slow()
            return False
        return True

    def _drop_slow(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.hub.dropped_slow()
            self.open = False
            transport.abort()  # close() would wait for the unread bytes to flush

    def pause_writing(self) -> None:
        """asyncio: this subscriber's unread bytes passed the transport's high-water mark. All such subscribers
        together stay within FUNDING_API_MAX_BUFFERED_MB, as HTTP answers do: beyond, this one is dropped (each one
        alone is held to FUNDING_WS_MAX_BUFFER_KB by :meth:`send_frame`)."""
        hub = self.hub
        hub.stalled.add(self)
        held = sum(s.transport.get_write_buffer_size() for s in hub.stalled if s.transport is not None)
        if held > hub.max_buffered_bytes:
            self._drop_slow()

    def resume_writing(self) -> None:
        self.hub.stalled.discard(self)

    def ping(self) -> None:
        self.last_ping = time.monotonic()
        if self.open:
            self.conn.send_ping(b"")
            self._flush()

    def close(self, code: int, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        self.conn.send_close(code, reason)
        self._flush()
        self._close_transport()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data in self.conn.data_to_send():
            if data:
                transport.write(data)
        if self.conn.close_expected():
            self.open = False
            self._close_transport()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if self._abort_timer is None:  # a client that does not read would hold the close for ever
            self._abort_timer = asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)
