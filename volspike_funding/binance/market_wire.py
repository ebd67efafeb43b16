"""Binance USDⓈ-M kline and 24 h ticker stream messages: parsing (pure, no I/O, no clock) and the REST shapes.

A ``<symbol>@kline_1h`` message on the combined endpoint (``/market/stream``), the shape of Binance's "Kline/
Candlestick Streams" response example (``tests/data/PROVENANCE.md``)::

    {"stream": "btcusdt@kline_1h",
     "data": {"e":"kline","E":1638747660000,"s":"BTCUSDT",
              "k":{"t":1638745200000,"T":1638748799999,"s":"BTCUSDT","i":"1h","f":100,"L":200,"o":"0.0010",
                   "c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000",
                   "V":"500","Q":"0.500","B":"123456"}}}

``k.t``/``k.T`` open and close time, ``o/h/l/c`` prices, ``v`` base and ``q`` quote volume, ``n`` trades, ``V``/
``Q`` taker buy volumes, ``x`` closed. Binance pushes the open candle about every 250 ms *if it changed*: a symbol
without trades sends nothing. The final ``"x":true`` arrives ~2 s after the close (freqtrade #11571).

``!ticker@arr`` pushes, every second, the 24 h tickers that changed (``{"stream":"!ticker@arr","data":[{"e":
"24hrTicker","E":...,"s":"BTCUSDT","p":"0.0015","P":"250.00","w":"0.0018","c":"0.0025","Q":"10","o":"0.0010",
"h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,"L":18150,"n":18151}, ...]}``); since
Binance's COIN-M integration (2026-06-30) the all-market streams carry COIN-M rows (``"st":2``), counted, not kept.

Decimals are kept as the strings Binance sent: the Binance-compatible routes answer with them verbatim. Typed
decoding (msgspec) keeps a kline message at 6-8 µs (``bench/bench_frame_cost.py``; the goal is 20 µs).
"""

from __future__ import annotations

from math import isfinite
from typing import Any, NamedTuple

import msgspec

from volspike_funding.binance.wire import SYMBOL_KINDS, is_valid_symbol, request_reply
from volspike_funding.core.errors import FrameError

KLINE_EVENT, TICKER_EVENT = "kline", "24hrTicker"
INTERVAL = "1h"
INTERVAL_MS = 3_600_000
ALL_TICKERS = "!ticker@arr"


class Candle(msgspec.Struct, frozen=True, gc=False):
    """One 1 h candle as Binance sent it; ``event_time`` is the message's ``E`` (0 when REST supplied it)."""

    symbol: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_base: str
    taker_quote: str
    closed: bool
    event_time: int = 0

    def rest_row(self) -> list[Any]:
        """Binance's REST ``/fapi/v1/klines`` row: twelve fields, decimals as strings, the last one ``"0"``."""
        return [self.open_time, self.open, self.high, self.low, self.close, self.volume, self.close_time,
                self.quote_volume, self.trades, self.taker_base, self.taker_quote, "0"]


class Ticker(msgspec.Struct, frozen=True, gc=False):
    """One 24 h ticker, in REST ``/fapi/v1/ticker/24hr`` field order (``rest()`` gives Binance's names)."""

    symbol: str
    price_change: str
    price_change_percent: str
    weighted_avg_price: str
    last_price: str
    last_qty: str
    open_price: str
    high_price: str
    low_price: str
    volume: str
    quote_volume: str
    open_time: int
    close_time: int
    first_id: int
    last_id: int
    count: int
    event_time: int

    def rest(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "priceChange": self.price_change,
                "priceChangePercent": self.price_change_percent, "weightedAvgPrice": self.weighted_avg_price,
                "lastPrice": self.last_price, "lastQty": self.last_qty, "openPrice": self.open_price,
                "highPrice": self.high_price, "lowPrice": self.low_price, "volume": self.volume,
                "quoteVolume": self.quote_volume, "openTime": self.open_time, "closeTime": self.close_time,
                "firstId": self.first_id, "lastId": self.last_id, "count": self.count}


class MarketMessage(NamedTuple):
    """What one kline/ticker connection message carried."""

    candles: list[Candle]
    tickers: list[Ticker]
    defects: list[tuple[str, str]]
    #: Rows of other products by kind (``coin_m``).
    other_kinds: dict[str, int]
    #: A reply to one of our requests (see :func:`volspike_funding.binance.wire.request_reply`): ``(id, error)``.
    reply: tuple[int | None, str | None] | None = None
    #: An all-tickers frame (the connection's heartbeat: it comes every second while Binance is alive).
    all_tickers: bool = False


class _K(msgspec.Struct):
    t: int
    T: int
    s: str
    i: str
    o: str
    c: str
    h: str
    l: str  # noqa: E741 - Binance's name
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str


class _Kline(msgspec.Struct):
    e: str
    E: int
    s: str
    k: _K


class _Tick(msgspec.Struct):
    e: str
    E: int
    s: str
    p: str
    P: str
    w: str
    c: str
    Q: str
    o: str
    h: str
    l: str  # noqa: E741
    v: str
    q: str
    O: int  # noqa: E741
    C: int
    F: int
    L: int
    n: int
    st: int = 1


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_KLINE = msgspec.json.Decoder(_Kline)
_TICKERS = msgspec.json.Decoder(list[msgspec.Raw])
_TICK = msgspec.json.Decoder(_Tick)
_ANY = msgspec.json.Decoder()
_INT64 = 2 ** 63


def _number(raw: str, positive: bool) -> bool:
    try:
        value = float(raw)
    except ValueError:
        return False
    return isfinite(value) and (value > 0 if positive else value >= 0)


def kline_problem(k: _K, symbol: str) -> str | None:
    """Why a kline must not be kept, or ``None`` (the same rules for a REST row: :func:`candle_from_rest`)."""
    if k.s != symbol or not is_valid_symbol(symbol):
        return f"symbol {k.s!r} malformed or not the message's {symbol!r}"
    if k.i != INTERVAL:
        return f"interval {k.i!r}, only {INTERVAL} is kept"
    if not (0 < k.t < _INT64 and k.t % INTERVAL_MS == 0 and k.T == k.t + INTERVAL_MS - 1):
        return f"open/close time {k.t}/{k.T} is no 1 h candle"
    if not all(_number(v, True) for v in (k.o, k.h, k.l, k.c)):
        return "a price is not a positive number"
    if not all(_number(v, False) for v in (k.v, k.q, k.V, k.Q)) or k.n < 0:
        return "a volume or the trade count is not a non-negative number"
    if float(k.l) > float(k.h):
        return f"low {k.l} above high {k.h}"
    return None


def parse_market_message(raw: str | bytes) -> MarketMessage:
    """One message of the kline/ticker connection: a combined-stream kline or ``!ticker@arr`` frame, or a reply
    to a request. Never raises for a bad item (reported in ``defects``); :class:`FrameError` for a message that
    is no JSON or no known shape."""
    try:
        envelope = _ENVELOPE.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _not_a_stream(raw)
    if "@kline_" in envelope.stream:
        try:
            event = _KLINE.decode(envelope.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return MarketMessage([], [], [("bad_kline", f"{envelope.stream}: {exc}")], {})
        problem = "not a kline event" if event.e != KLINE_EVENT else kline_problem(event.k, event.s)
        if problem is not None:
            return MarketMessage([], [], [("bad_kline", f"{envelope.stream}: {problem}")], {})
        k = event.k
        return MarketMessage([Candle(k.s, k.t, k.T, k.o, k.h, k.l, k.c, k.v, k.q, k.n, k.V, k.Q, k.x, event.E)],
                             [], [], {})
    if envelope.stream == ALL_TICKERS:
        return _tickers(envelope.data)
    return MarketMessage([], [], [], {})  # another stream: not ours to keep


def _tickers(data: msgspec.Raw) -> MarketMessage:
    try:
        rows = _TICKERS.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError("bad_ticker_frame", f"!ticker@arr data is not an array: {exc}") from None
    tickers: list[Ticker] = []
    defects: list[tuple[str, str]] = []
    other: dict[str, int] = {}
    for row in rows:
        try:
            t = _TICK.decode(row)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            defects.append(("bad_ticker", str(exc)))
            continue
        if t.st != 1:
            name = SYMBOL_KINDS.get(t.st, f"symbol_type_{t.st}")
            other[name] = other.get(name, 0) + 1
            continue
        if t.e != TICKER_EVENT or not is_valid_symbol(t.s) or not 0 < t.E < _INT64:
            defects.append(("bad_ticker", f"{t.s!r}: not a valid 24hrTicker event"))
            continue
        if not (all(_number(v, False) for v in (t.w, t.c, t.Q, t.o, t.h, t.l, t.v, t.q))
                and _number(t.p.removeprefix("-"), False) and _number(t.P.removeprefix("-"), False)):
            defects.append(("bad_ticker", f"{t.s}: a price or volume is not a number"))
            continue
        tickers.append(Ticker(t.s, t.p, t.P, t.w, t.c, t.Q, t.o, t.h, t.l, t.v, t.q, t.O, t.C, t.F, t.L, t.n, t.E))
    return MarketMessage([], tickers, defects, other, all_tickers=True)


def _not_a_stream(raw: str | bytes) -> MarketMessage:
    try:
        message = _ANY.decode(raw)
    except msgspec.DecodeError as exc:
        raise FrameError("not_json", f"not JSON: {exc}") from None
    reply = request_reply(message) if isinstance(message, dict) else None
    if reply is None:
        raise FrameError("unexpected_payload", "neither a combined-stream message nor a reply")
    return MarketMessage([], [], [], {}, reply)


def candle_from_rest(symbol: str, row: Any, now_ms: int) -> Candle:
    """A REST ``/fapi/v1/klines`` row (twelve fields) as a :class:`Candle`: final when it closed before
    ``now_ms``. :class:`FrameError` for a row that breaks the stream's rules."""
    if not (isinstance(row, list) and len(row) >= 11 and type(row[0]) is int and type(row[6]) is int
            and all(type(row[i]) is str for i in (1, 2, 3, 4, 5, 7, 9, 10)) and type(row[8]) is int):
        raise FrameError("bad_rest_kline", f"{symbol}: not a kline row: {str(row)[:80]}")
    k = _K(row[0], row[6], symbol, INTERVAL, row[1], row[4], row[2], row[3], row[5], row[8], False, row[7],
           row[9], row[10])
    problem = kline_problem(k, symbol)
    if problem is not None:
        raise FrameError("bad_rest_kline", f"{symbol}: {problem}")
    return Candle(symbol, k.t, k.T, k.o, k.h, k.l, k.c, k.v, k.q, k.n, k.V, k.Q, k.T < now_ms)


def kline_stream(symbol: str) -> str:
    """The stream name Binance wants (lower case)."""
    return f"{symbol.lower()}@kline_{INTERVAL}"
