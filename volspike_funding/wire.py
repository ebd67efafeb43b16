"""Parsing of Binance USDⓈ-M mark-price stream frames: pure functions, no I/O, no clock.

The daemon subscribes to ``!markPrice@arr@1s`` on the combined-stream endpoint, which wraps every payload::

    {"stream": "!markPrice@arr@1s",
     "data": [{"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT",
               "p": "11794.15000000", "i": "11784.62659091", "P": "11784.25641265",
               "r": "0.00038167", "T": 1562306400000},
              ...]}

``E`` is the event time (ms), ``p`` the mark price, ``i`` the index price, ``P`` the estimated settle price,
``r`` the funding rate and ``T`` the next funding time (ms). Delivery contracts send ``"r": ""`` and ``"T": 0``:
they have no funding, so both become ``None`` here — never ``0``. Raw (unwrapped) arrays and single objects, as
sent by the ``/ws/<stream>`` endpoints, are accepted too.

Binance's decimal strings are kept next to the parsed floats so that a Binance-shaped answer can be re-emitted
byte for byte later (see ``/fapi/v1/premiumIndex`` in the API).
"""

from __future__ import annotations

from math import inf, isfinite
from typing import Any, NamedTuple

import orjson

from .errors import FrameError

MARK_PRICE_EVENT = "markPriceUpdate"

class MarkPrice(NamedTuple):
    """One symbol's mark-price update, exactly as Binance sent it plus its parsed numbers."""

    symbol: str
    event_time: int
    mark_price: float
    index_price: float | None
    settle_price: float | None
    funding_rate: float | None
    next_funding_time: int | None
    mark_price_str: str
    index_price_str: str | None
    settle_price_str: str | None
    funding_rate_str: str | None


class ParsedFrame(NamedTuple):
    """What one frame carried: usable updates, item defects ``(kind, detail)`` and ignored payloads."""

    updates: list[MarkPrice]
    defects: list[tuple[str, str]]
    ignored: int


def _is_decimal_or_absent(raw: Any) -> bool:
    return raw is None or type(raw) is str


def parse_item(item: Any) -> MarkPrice:
    """Parse one ``markPriceUpdate`` object; raise :class:`FrameError` naming the defect.

    Written as one flat function because it runs for every symbol every second: see ``bench/``.
    """
    if type(item) is not dict:
        raise FrameError("not_an_object", f"item is {type(item).__name__}, not an object")
    symbol = item.get("s")
    if type(symbol) is not str or not symbol:
        raise FrameError("missing_symbol", f"item without a symbol: {str(item)[:120]}")
    mark_str, index_str, settle_str, funding_str = item.get("p"), item.get("i"), item.get("P"), item.get("r")
    if not (type(mark_str) is str and _is_decimal_or_absent(index_str) and _is_decimal_or_absent(settle_str)
            and _is_decimal_or_absent(funding_str)):
        raise FrameError("bad_price", f"{symbol}: prices must be decimal strings: {str(item)[:120]}")
    try:
        mark = float(mark_str)
        # Absent or "" is unknown (delivery contracts send "r": ""): None, never 0.
        index = float(index_str) if index_str else None
        settle = float(settle_str) if settle_str else None
        funding = float(funding_str) if funding_str else None
    except ValueError as exc:
        raise FrameError("bad_price", f"{symbol}: {exc}") from None
    if not (0.0 < mark < inf and (index is None or isfinite(index)) and (settle is None or isfinite(settle))
            and (funding is None or isfinite(funding))):
        raise FrameError("bad_price", f"{symbol}: prices must be finite and the mark price positive: "
                                      f"{str(item)[:120]}")
    event_time = item.get("E")
    next_funding = item.get("T", 0)
    if type(event_time) is not int or event_time <= 0 or type(next_funding) is not int or next_funding < 0:
        raise FrameError("bad_time", f"{symbol}: E={event_time!r} T={next_funding!r}")
    return MarkPrice(symbol, event_time, mark, index, settle, funding, next_funding or None, mark_str,
                     index_str if index is not None else None, settle_str if settle is not None else None,
                     funding_str if funding is not None else None)


def is_mark_price_stream(stream: Any) -> bool:
    """True for ``!markPrice@arr``, ``!markPrice@arr@1s`` and per-symbol ``<sym>@markPrice[@1s]`` streams."""
    return isinstance(stream, str) and "markprice" in stream.lower()


def parse_frame(raw: str | bytes) -> ParsedFrame:
    """Parse one WebSocket text frame.

    Raises :class:`FrameError` (``bad_json`` / ``bad_shape``) when the frame as a whole is unusable. Defective
    items are reported in ``defects`` and skipped, so one bad item never costs the rest of the frame. Payloads of
    other streams or event types (e.g. a subscription reply ``{"result": null, "id": 1}``) count as ``ignored``.
    """
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("bad_json", f"not JSON: {exc}") from None
    data: Any = message
    if isinstance(message, dict) and "stream" in message:
        if not is_mark_price_stream(message["stream"]):
            return ParsedFrame([], [], 1)
        data = message.get("data")
    if isinstance(data, dict):
        if "e" not in data and "s" not in data:
            return ParsedFrame([], [], 1)
        data = [data]
    elif not isinstance(data, list):
        raise FrameError("bad_shape", f"payload is {type(data).__name__}, not an object or array")
    updates: list[MarkPrice] = []
    defects: list[tuple[str, str]] = []
    ignored = 0
    for item in data:
        if isinstance(item, dict) and item.get("e", MARK_PRICE_EVENT) != MARK_PRICE_EVENT:
            ignored += 1
            continue
        try:
            updates.append(parse_item(item))
        except FrameError as exc:
            defects.append((exc.kind, str(exc)))
    return ParsedFrame(updates, defects, ignored)
