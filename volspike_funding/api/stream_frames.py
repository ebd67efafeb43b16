"""What the local WebSocket sends: Binance's mark-price events rebuilt from the stored records, each serialised
once into a WebSocket frame shared by every subscriber. Pure: views and the clock come in, bytes go out.

A row as Binance sends it (``tests/data/markprice_2026.jsonl``, a 2026 capture), re-emitted with the decimal
strings and event time the daemon received::

    {"e":"markPriceUpdate","E":1791382993000,"s":"BTCUSDT","p":"83084.30000000","ap":"83084.30000000",
     "P":"83195.15881449","i":"83123.65891304","r":"0.00000078","T":1791388800000,"st":1}

``ap`` and ``st`` appear when Binance sent them (the older shape has neither); ``T`` is ``0`` when no funding is
scheduled, as Binance sends it. Each stream's payload exists twice: raw (``/market/ws``) and wrapped
``{"stream": <name>, "data": <payload>}`` (``/market/stream``, or ``SET_PROPERTY combined``).

Cadence: every view that brings newer event times makes one 1 s frame of the rows that changed; the 3 s
variants (``!markPrice@arr``, ``<symbol>@markPrice``) collect the changes until 3 s have passed, as Binance's
3 s streams do. The all-market streams leave out TradFi perpetuals, as Binance's do ("Mark Price Stream for All
market": *this stream does not cover TradFi Perps*); their per-symbol streams carry them.

The market streams, ``<symbol>@kline_1h`` and ``!ticker@arr``, come from the market document
(:mod:`~volspike_funding.store.marketfile`). A kline event as Binance documents it (``tests/data/binance_docs.jsonl``
line 14)::

    {"e":"kline","E":1638747660000,"s":"BTCUSDT","k":{"t":1638745200000,"T":1638748799999,"s":"BTCUSDT","i":"1h",
     "f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,
     "q":"1.0000","V":"500","Q":"0.500","B":"123456"}}

re-emitted with the decimal strings Binance sent; ``E`` is the newest event time the feed holds for the symbol (a
symbol whose candles came from REST only has none, and gets no event, as on Binance).
``f``/``L`` (first and last trade ids) are not kept by the feed and are left out rather than invented; ``B`` is
``"0"``, as in Binance's REST rows. A candle goes out when its row changed (Binance: every 250 ms while it trades;
here at the market document's cadence, once a second), and a closed hour once more when it becomes final
(``"x":true``). ``!ticker@arr`` carries each ``24hrTicker`` whose event time moved (field order as Binance's).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson

from volspike_funding.binance.stream_requests import ALL_MARK_1S, ALL_MARK_3S, ALL_TICKERS
from volspike_funding.store.marketfile import MarketSnapshot
from volspike_funding.store.statefile import binance_strings
from volspike_funding.store.view import View

#: The 3 s streams' period, less half the 1 s cadence: frames arrive once a second, give or take.
SLOW_PERIOD_S = 2.5
_TRADFI = "TRADIFI_PERPETUAL"


#: The smallest message compressed for a client that negotiated permessage-deflate. RFC 7692 lets any message go
#: out uncompressed, and a 250-byte row would shrink to ~150 bytes for ~10 us of CPU; an all-market array of 700
#: rows (123 KB) shrinks 4.6x to 26 KB for 0.8 ms, once for all its subscribers (bench/bench_stream.py).
DEFLATE_MIN_BYTES = 1024
#: zlib level 1: level 6 saves another 18 % of the bytes for 3.8x the CPU.
DEFLATE_LEVEL = 1
#: The window the shared compressed frames are made with; a client that asked the server for a smaller one
#: (``server_max_window_bits``) gets them uncompressed.
DEFLATE_WINDOW_BITS = 15


def ws_text_frame(payload: bytes, compressed: bool = False) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 5.2), as a server sends it; RSV1 marks a compressed
    message (RFC 7692 6)."""
    size = len(payload)
    first = 0xC1 if compressed else 0x81
    if size < 126:
        head = struct.pack("!BB", first, size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def deflate_blocks(data: bytes) -> bytes:
    """``data`` as raw deflate blocks ending in a sync flush: standalone (no back-reference before them) and
    byte-aligned without a final block, so such pieces concatenate into one valid stream of their texts."""
    encoder = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -DEFLATE_WINDOW_BITS)
    return encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)


def deflated_frame(*blocks: bytes) -> bytes:
    """Deflate pieces as one compressed message that every permessage-deflate client with a 15-bit server window
    can read: no context takeover (the message stands alone, which is what lets subscribers share it), the last
    sync flush's empty-block tail removed (RFC 7692 7.2.1)."""
    return ws_text_frame(b"".join(blocks)[:-4], compressed=True)


@dataclass(frozen=True)
class Payload:
    """One stream's next message, framed both ways, and compressed both ways when it is large and some
    subscriber negotiated permessage-deflate."""

    raw: bytes
    combined: bytes
    raw_deflated: bytes | None = None
    combined_deflated: bytes | None = None

    def frame(self, combined: bool, deflate: bool) -> bytes:
        if deflate:
            chosen = self.combined_deflated if combined else self.raw_deflated
            if chosen is not None:
                return chosen
        return self.combined if combined else self.raw


def payload(stream: str, data: bytes, deflate: bool = False) -> Payload:
    """``deflate``: also the compressed frames, if ``data`` is worth compressing."""
    head = b'{"stream":' + orjson.dumps(stream) + b',"data":'
    plain = Payload(ws_text_frame(data), ws_text_frame(head + data + b"}"))
    if not deflate or len(data) < DEFLATE_MIN_BYTES:
        return plain
    body = deflate_blocks(data)  # compressed once: the wrapped form is the same blocks between two small ones
    return Payload(plain.raw, plain.combined, deflated_frame(body),
                   deflated_frame(deflate_blocks(head), body, deflate_blocks(b"}")))


def mark_row(record: dict[str, Any]) -> bytes:
    """A stored record as Binance's ``markPriceUpdate`` object (its strings, in Binance's key order)."""
    raw = binance_strings(record)
    row: dict[str, Any] = {"e": "markPriceUpdate", "E": record["eventTime"], "s": record["symbol"],
                           "p": raw["markPrice"] or repr(float(record["markPrice"]))}
    average = raw.get("markPriceAverage")
    if average:
        row["ap"] = average
    row["P"] = raw["estimatedSettlePrice"]
    row["i"] = raw["indexPrice"]
    row["r"] = raw["lastFundingRate"]
    row["T"] = record.get("nextFundingTime") or 0
    kind = raw.get("symbolType")
    if kind and kind.isdigit():
        row["st"] = int(kind)
    return orjson.dumps(row)


class MarkFrames:
    """Turns successive views into the frames of the mark-price streams that have subscribers."""

    def __init__(self) -> None:
        self._sent_fast: dict[str, int] = {}
        self._sent_slow: dict[str, int] = {}
        self._slow_at: float | None = None
        self._rows: dict[str, tuple[int, bytes]] = {}
        self._tradfi_of: tuple[Any, frozenset[str]] = (None, frozenset())

    def _row(self, symbol: str, record: dict[str, Any]) -> bytes:
        """A symbol's row, serialised once per event time (the fast and slow streams share it)."""
        cached = self._rows.get(symbol)
        event = record["eventTime"]
        if cached is not None and cached[0] == event:
            return cached[1]
        row = mark_row(record)
        self._rows[symbol] = (event, row)
        return row

    def update(self, view: View, now: float, wanted: Iterable[str], stale_after_s: float,
               deflate: bool = False) -> dict[str, Payload]:
        """The frames due now, by stream name, for the ``wanted`` streams (the names subscribers hold). A record
        older than ``stale_after_s`` is never sent: a silent symbol stays silent, as on Binance. ``deflate``: the
        large frames compressed too (see :func:`payload`)."""
        return {name: frame for batch in self.batches(view, now, wanted, stale_after_s, deflate)
                for name, frame in batch.items()}

    def batches(self, view: View, now: float, wanted: Iterable[str], stale_after_s: float,
                deflate: bool = False) -> Iterator[dict[str, Payload]]:
        """:meth:`update`'s frames as they are made: each pass's per-symbol frames, then its all-market one, so
        the small frames can be on their way while the big one is serialised and compressed."""
        wanted = set(wanted)
        symbols = view.symbols
        cutoff = now - stale_after_s
        slow_due = self._slow_at is None or now - self._slow_at >= SLOW_PERIOD_S
        for fast, sent in ((True, self._sent_fast), (False, self._sent_slow)):
            if not fast and not slow_due:
                continue
            changed = [(s, r) for s, r in symbols.items()
                       if r["eventTime"] > sent.get(s, 0) and r["updatedAt"] >= cutoff]
            if not changed:
                continue
            if not fast:
                self._slow_at = now
            all_name = ALL_MARK_1S if fast else ALL_MARK_3S
            suffix = "@markPrice@1s" if fast else "@markPrice"
            tradfi = self._tradfi(view)
            rows: list[bytes] = []
            out: dict[str, Payload] = {}
            for symbol, record in changed:
                sent[symbol] = record["eventTime"]
                name = symbol.lower() + suffix
                want_symbol = name in wanted
                if want_symbol or all_name in wanted:
                    row = self._row(symbol, record)
                    if want_symbol:
                        out[name] = payload(name, row)
                    if symbol not in tradfi:
                        rows.append(row)
            if out:
                yield out
            if rows and all_name in wanted:
                yield {all_name: payload(all_name, b"[" + b",".join(rows) + b"]", deflate)}
        for memo in (self._rows, self._sent_fast, self._sent_slow):
            if len(memo) > len(symbols):  # delisted symbols: the memos stay bounded
                for gone in [s for s in memo if s not in symbols]:
                    del memo[gone]

    def _tradfi(self, view: View) -> frozenset[str]:
        reference = view.reference
        if reference is not self._tradfi_of[0]:
            names = frozenset() if reference is None else frozenset(
                s for s, info in reference.symbols.items() if info.get("contractType") == _TRADFI)
            self._tradfi_of = (reference, names)
        return self._tradfi_of[1]


#: REST ticker/24hr names -> the 24hrTicker event's keys, in the event's order.
TICKER_KEYS = (("priceChange", "p"), ("priceChangePercent", "P"), ("weightedAvgPrice", "w"), ("lastPrice", "c"),
               ("lastQty", "Q"), ("openPrice", "o"), ("highPrice", "h"), ("lowPrice", "l"), ("volume", "v"),
               ("quoteVolume", "q"), ("openTime", "O"), ("closeTime", "C"), ("firstId", "F"), ("lastId", "L"),
               ("count", "n"))


def kline_event(symbol: str, row: list[Any], final: bool, event_ms: int) -> bytes:
    """A REST klines row (twelve fields) and its finality as Binance's ``kline`` event."""
    k = {"t": row[0], "T": row[6], "s": symbol, "i": "1h", "o": row[1], "c": row[4], "h": row[2], "l": row[3],
         "v": row[5], "n": row[8], "x": final, "q": row[7], "V": row[9], "Q": row[10], "B": row[11]}
    return orjson.dumps({"e": "kline", "E": event_ms, "s": symbol, "k": k})


def ticker_event(symbol: str, ticker: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"e": "24hrTicker", "E": ticker.get("E"), "s": symbol}
    body.update((short, ticker.get(name)) for name, short in TICKER_KEYS)
    return orjson.dumps(body)


class MarketFrames:
    def __init__(self) -> None:
        self._candles: dict[str, tuple[Any, bool]] = {}
        self._tickers: dict[str, int] = {}

    def update(self, snap: MarketSnapshot, wanted: Iterable[str], deflate: bool = False) -> list[tuple[str, Payload]]:
        """The frames due, in order, as ``(stream name, frame)`` (a stream may have two: an hour's final candle,
        then the next hour's first)."""
        wanted = set(wanted)
        out: list[tuple[str, Payload]] = []
        for symbol, entry in snap.klines.items():
            rows, finals = entry.get("rows") or [], entry.get("final") or []
            if not rows or len(finals) != len(rows):
                continue
            last, final = rows[-1], bool(finals[-1])
            previous = self._candles.get(symbol)
            self._candles[symbol] = (last, final)
            name = symbol.lower() + "@kline_1h"
            received = entry.get("receivedAt")
            if previous == (last, final) or name not in wanted or not isinstance(received, (int, float)):
                # no stream message yet (candles from REST only, a symbol without trades): Binance pushes nothing
                # then, and an event time of 0 would be an unknown presented as a number
                continue
            event_ms = int(received * 1000)
            if (previous is not None and previous[0][0] != last[0] and not previous[1] and len(rows) > 1
                    and rows[-2][0] == previous[0][0]):
                # the hour closed between two documents: its closing candle goes out before the new hour's
                out.append((name, payload(name, kline_event(symbol, rows[-2], bool(finals[-2]), event_ms))))
            out.append((name, payload(name, kline_event(symbol, last, final, event_ms))))
        rows_out = []
        for symbol, ticker in snap.tickers.items():
            event = ticker.get("E")
            if isinstance(event, int) and event > self._tickers.get(symbol, 0):
                self._tickers[symbol] = event
                if ALL_TICKERS in wanted:
                    rows_out.append(ticker_event(symbol, ticker))
        if rows_out:
            out.append((ALL_TICKERS, payload(ALL_TICKERS, b"[" + b",".join(rows_out) + b"]", deflate)))
        for memo, names in ((self._candles, snap.klines), (self._tickers, snap.tickers)):
            if len(memo) > len(names):
                for gone in [s for s in memo if s not in names]:
                    del memo[gone]
        return out
