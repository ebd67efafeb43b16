"""Binance's market-stream protocol, server side: the stream names the local WebSocket serves and the JSON
requests a client sends on an open connection. Pure: no I/O, the clock passed in.

Requests and replies as Binance documents them (``tests/data/binance_docs.jsonl``, lines 1–9)::

    {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 1}   -> {"result": null, "id": 1}
    {"method": "UNSUBSCRIBE", "params": ["btcusdt@markPrice@1s"], "id": 312} -> {"result": null, "id": 312}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}                    -> {"result": ["btcusdt@markPrice@1s"], "id": 3}
    {"method": "SET_PROPERTY", "params": ["combined", true], "id": 5}      -> {"result": null, "id": 5}
    {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}            -> {"result": true, "id": 2}

and refused as servers send it, ``{"error": {"code": 2, "msg": "Invalid request: ..."}, "id": 1}``, with Binance's
codes: 0 unknown property, 1 invalid value type, 2 invalid request, 3 invalid JSON. Ids are echoed: an unsigned
integer (ccxt, python-binance), a string (Binance's own SDK sends a UUID) or null.

Binance's limits (USDⓈ-M "WebSocket Market Streams": *10 incoming messages per second*, *a maximum of 1024
streams*; a ping or pong frame counts as a message, as Binance's spot docs define it) are enforced by closing
with 1008 "Too many requests", the close Binance sends for a rate breach (binance/binance-connector-js#530).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from volspike_funding.binance.wire import is_valid_symbol

MAX_STREAMS = 1024
MAX_INCOMING_PER_S = 10
#: Close codes: a limit broken (Binance's), the service's data too old to serve (RFC 6455 "Try Again Later").
CLOSE_LIMIT = 1008
CLOSE_STALE = 1013
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
ALL_MARK_1S, ALL_MARK_3S = "!markPrice@arr@1s", "!markPrice@arr"
ALL_TICKERS = "!ticker@arr"
_MAX_ID_CHARS = 64


@dataclass(frozen=True)
class Stream:
    """A stream we serve: ``kind`` is ``mark`` (mark price), ``kline`` or ``ticker``; ``symbol`` upper case, or
    ``None`` for an all-market stream; ``fast``: the 1 s variant of a mark-price stream (else Binance's 3 s)."""

    name: str
    kind: str
    symbol: str | None
    fast: bool = True


def parse_stream(raw: Any, market: bool = False) -> Stream | str:
    """The served stream ``raw`` names, or why it is not one. Symbols are case-insensitive (Binance's names are
    lower case; the normalised name is what replies and combined payloads carry); ``market``: klines and
    tickers are served too."""
    if type(raw) is not str or not raw:
        return "a stream name must be a non-empty string"
    if raw in (ALL_MARK_1S, ALL_MARK_3S):
        return Stream(raw, "mark", None, raw == ALL_MARK_1S)
    if raw == ALL_TICKERS and market:
        return Stream(raw, "ticker", None)
    symbol, at, kind = raw.partition("@")
    if at and is_valid_symbol(symbol) and not symbol.startswith("!"):
        name = f"{symbol.lower()}@{kind}"
        if kind in ("markPrice@1s", "markPrice"):
            return Stream(name, "mark", symbol.upper(), kind == "markPrice@1s")
        if kind == "kline_1h" and market:
            return Stream(name, "kline", symbol.upper())
    served = f"{ALL_MARK_1S}, {ALL_MARK_3S}, <symbol>@markPrice@1s, <symbol>@markPrice"
    if market:
        served += f", <symbol>@kline_1h, {ALL_TICKERS}"
    return f"stream {raw[:80]!r} is not served here (served: {served})"


def parse_streams(names: list[Any], market: bool = False) -> list[Stream] | str:
    """The streams ``names`` name (:func:`parse_stream`), or why the first one that is not served is not."""
    parsed = [parse_stream(n, market) for n in names]
    problem = next((p for p in parsed if isinstance(p, str)), None)
    return problem if problem is not None else [p for p in parsed if isinstance(p, Stream)]


def reply(request_id: Any, result: Any = None) -> bytes:
    return orjson.dumps({"result": result, "id": request_id})


def error(code: int, msg: str, request_id: Any = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id})


@dataclass(frozen=True)
class Request:
    method: str
    params: list[Any]
    id: Any


def parse_request(text: str | bytes) -> Request | bytes:
    """A well-formed request, or the error frame that answers it (Binance's codes and wording)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return error(3, f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if type(message) is not dict:
        return error(2, "Invalid request: expected an object")
    request_id = message.get("id")
    if not (request_id is None or (type(request_id) is int and 0 <= request_id < 2 ** 64)
            or (type(request_id) is str and len(request_id) <= _MAX_ID_CHARS)):
        return error(2, "Invalid request: request ID must be an unsigned integer")
    method = message.get("method")
    if method is None:
        return error(2, "Invalid request: missing field `method`", request_id)
    if method not in METHODS:
        shown = str(method)[:40]
        return error(2, f"Invalid request: unknown variant `{shown}`, expected one of "
                        + ", ".join(f"`{m}`" for m in METHODS), request_id)
    params = message.get("params", [])
    if type(params) is not list:
        return error(2, "Invalid request: params must be an array", request_id)
    return Request(method, params, request_id)


class Subscriptions:
    """One connection's streams in subscription order and its ``combined`` property, and what each request does
    to them. :meth:`handle` returns ``(frame to send, streams added, streams removed, close)``; ``close`` is
    ``(code, reason)`` when the connection must be closed instead."""

    def __init__(self, combined: bool, market: bool = False) -> None:
        self.combined = combined
        self.market = market
        self.streams: dict[str, Stream] = {}

    def handle(self, request: Request) -> tuple[bytes | None, list[Stream], list[Stream], tuple[int, str] | None]:
        rid, params = request.id, request.params
        if request.method == "LIST_SUBSCRIPTIONS":
            return reply(rid, list(self.streams)), [], [], None
        if request.method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(request), [], [], None
        streams = parse_streams(params, self.market)
        if isinstance(streams, str):
            return error(2, f"Invalid request: {streams}", rid), [], [], None
        if request.method == "SUBSCRIBE":
            added = [s for s in dict.fromkeys(streams) if s.name not in self.streams]
            if len(self.streams) + len(added) > MAX_STREAMS:
                return None, [], [], (CLOSE_LIMIT, f"Too many streams: at most {MAX_STREAMS} per connection")
            self.streams.update((s.name, s) for s in added)
            return reply(rid), added, [], None
        removed = [self.streams.pop(s.name) for s in dict.fromkeys(streams) if s.name in self.streams]
        return reply(rid), [], removed, None

    def _property(self, request: Request) -> bytes:
        params, rid = request.params, request.id
        if not params or type(params[0]) is not str:
            return error(2, "Invalid request: property name must be a string", rid)
        if params[0] != "combined":
            return error(0, "Unknown property", rid)
        if request.method == "GET_PROPERTY":
            return reply(rid, self.combined)
        if len(params) != 2 or type(params[1]) is not bool:
            return error(1, "Invalid value type: expected Boolean", rid)
        self.combined = params[1]
        return reply(rid)


class RateLimit:
    """At most ``limit`` messages in any ``window_s``: the times of the last ``limit`` are kept."""

    def __init__(self, limit: int = MAX_INCOMING_PER_S, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit)

    def allow(self, now: float) -> bool:
        times = self._times
        if len(times) == times.maxlen and now - times[0] < self.window_s:
            return False
        times.append(now)
        return True
