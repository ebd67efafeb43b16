"""Binance USDⓈ-M mark-price stream frames: parsing (pure functions, no I/O, no clock) and the messages we send.

The daemon subscribes to ``!markPrice@arr@1s`` on the combined-stream endpoint, which wraps every payload. A row
as Binance sends it in 2026 (verbatim from a public capture, see ``tests/data/PROVENANCE.md``)::

    {"stream": "!markPrice@arr@1s",
     "data": [{"e":"markPriceUpdate","E":1791382993000,"s":"BTCUSDT","p":"83084.30000000",
               "ap":"83084.30000000","P":"83195.15881449","i":"83123.65891304","r":"0.00000078",
               "T":1791388800000,"st":1}, ...]}

``E`` is the event time (ms), ``p`` the mark price, ``ap`` its moving average, ``i`` the index price,
``P`` the estimated settle price, ``r`` the funding rate, ``T`` the next funding time (ms) and ``st`` the symbol
type: ``1`` USDⓈ-M, ``2`` COIN-M. Since Binance's COIN-M/USDⓈ-M integration (2026-06-30) COIN-M rows such as
``BTCUSD_PERP`` arrive on this stream too; they are not USDⓈ-M data and are only counted here, by kind.

``T == 0`` means no funding is scheduled (dated and delisted contracts): today Binance sends ``"r":"0.00000000"``
with it, the documented older shape ``"r":""``. Either way the funding rate and next funding time are ``None``
here — never 0 — while Binance's own string is kept for the Binance-compatible route. Rows without ``st``/``ap``
(the older shape) are USDⓈ-M; ``ap`` and ``st`` are kept as sent (``None`` when not), so the local WebSocket can
re-emit a row exactly, and ``ap`` is checked like the other decimals (it is stored ``|``-joined with them, so it
must not be free text). Raw arrays and single objects (the ``/ws/<stream>`` endpoints, per-symbol streams) are
accepted too.
"""

from __future__ import annotations

import re
import sys
from math import inf, isfinite
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec
import orjson

from volspike_funding.core.errors import FrameError

MARK_PRICE_EVENT: Final = "markPriceUpdate"
#: The all-market array stream's name starts so (``!markPrice@arr``, ``!markPrice@arr@1s``).
ALL_MARKET_PREFIX = "!markPrice@arr"
MAX_SYMBOL_LENGTH = 40
#: Symbol types (``st``) that are not USDⓈ-M, by the name they are counted under.
SYMBOL_KINDS = {2: "coin_m"}
# Letters (any script: Binance lists non-ASCII symbols), digits and "_": nothing that is a path, list or field
# separator, a control character or white space, wherever the symbol ends up (file, log, URL, metrics label).
_SYMBOL = re.compile(r"[^\W]{1,%d}" % MAX_SYMBOL_LENGTH)
#: Symbols already found valid: the same ~750 names arrive every second, and a set lookup is ten times cheaper
#: than the pattern. Bounded, so a feed inventing names cannot grow it.
_VALID: set[str] = set()
_VALID_MAX = 20_000


class MarkPrice(msgspec.Struct, frozen=True, gc=False):
    """One symbol's mark-price update, exactly as Binance sent it plus its parsed numbers. (A Struct, not a
    NamedTuple: 700 are made a second, and a NamedTuple's Python-level ``__new__`` cost 0.5 ms of each frame.)"""

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
    #: Binance's ``ap`` (mark price moving average) as sent; ``None`` when not sent.
    mark_average_str: str | None
    #: Binance's ``st`` (1 USDⓈ-M); ``None`` when not sent (the older shape).
    symbol_type: int | None


class ParsedFrame(NamedTuple):
    """What one frame carried: usable updates, item defects ``(kind, detail)``, ignored payloads, rows of other
    products by kind (``coin_m``), and whether it came from the all-market array stream (a combined
    ``!markPrice@arr...`` frame, or a raw array) rather than a per-symbol stream."""

    updates: list[MarkPrice]
    defects: list[tuple[str, str]]
    ignored: int
    other_kinds: dict[str, int]
    all_market: bool
    #: The event time ``E`` of the frame's last mark-price item, even one rejected (the clock-skew sample).
    event_ms: int | None = None
    #: A reply to one of our requests: ``(id, None)`` acknowledged, ``(id, "error 2: ...")`` refused (``id`` is
    #: ``None`` when Binance's error names none). See :func:`request_reply`.
    reply: tuple[int | None, str | None] | None = None


def symbol_problem(symbol: Any) -> str | None:
    """Why ``symbol`` is not a plausible Binance symbol, or ``None``. The API applies the same rule to requests."""
    if type(symbol) is not str or not symbol:
        return "empty"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"longer than {MAX_SYMBOL_LENGTH} characters"
    if _SYMBOL.fullmatch(symbol) is None:
        return "only letters, digits and '_' are allowed"
    return None


def is_valid_symbol(symbol: Any) -> bool:
    """:func:`symbol_problem` is ``None``, answered from the memo of symbols already seen valid when possible."""
    if symbol in _VALID:
        return True
    if symbol_problem(symbol) is not None:
        return False
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID.add(symbol)
    return True


def _is_decimal_or_absent(raw: Any) -> bool:
    return raw is None or type(raw) is str


def parse_item(item: Any, now_ms: int | None = None, max_skew_ms: int = 0) -> MarkPrice:
    """Parse one ``markPriceUpdate`` object; raise :class:`FrameError` naming the defect.

    With ``now_ms``, an event time more than ``max_skew_ms`` away from it is ``implausible_time``: one frame
    stamped an hour (or a century) ahead must not outrank every true update that follows it. ``now_ms`` is
    Binance's clock as the caller measures it (the daemon: its clock plus the median skew), so a host whose own
    clock is minutes off still takes Binance's frames.
    Written as one flat function because it runs for every symbol every second: see ``bench/``.
    """
    if type(item) is not dict:
        raise FrameError("not_an_object", f"item is {type(item).__name__}, not an object")
    symbol = item.get("s")
    if type(symbol) is not str or not symbol:
        raise FrameError("missing_symbol", f"item without a symbol: {str(item)[:120]}")
    if symbol not in _VALID and not is_valid_symbol(symbol):
        raise FrameError("bad_symbol", f"symbol {symbol[:60]!r}: {symbol_problem(symbol)}")
    kind = item.get("st")
    if kind is not None and type(kind) is not int:
        raise FrameError("bad_symbol_type", f"{symbol}: st={str(kind)[:20]!r}")
    mark_str, index_str, settle_str, funding_str = item.get("p"), item.get("i"), item.get("P"), item.get("r")
    average_str = item.get("ap")
    if not (type(mark_str) is str and _is_decimal_or_absent(index_str) and _is_decimal_or_absent(settle_str)
            and _is_decimal_or_absent(funding_str) and _is_decimal_or_absent(average_str)):
        raise FrameError("bad_price", f"{symbol}: prices must be decimal strings: {str(item)[:120]}")
    try:
        mark = float(mark_str)
        index = float(index_str) if index_str else None
        settle = float(settle_str) if settle_str else None
        funding = float(funding_str) if funding_str else None
        average = float(average_str) if average_str else None
    except ValueError as exc:
        raise FrameError("bad_price", f"{symbol}: {exc}") from None
    if not (0.0 < mark < inf and (index is None or isfinite(index)) and (settle is None or isfinite(settle))
            and (funding is None or isfinite(funding)) and (average is None or isfinite(average))):
        raise FrameError("bad_price", f"{symbol}: prices must be finite and the mark price positive: "
                                      f"{str(item)[:120]}")
    event_time = item.get("E")
    next_funding = item.get("T", 0)
    if type(event_time) is not int or event_time <= 0 or type(next_funding) is not int or next_funding < 0:
        raise FrameError("bad_time", f"{symbol}: E={event_time!r} T={next_funding!r}")
    if now_ms is not None and abs(event_time - now_ms) > max_skew_ms:
        raise FrameError("implausible_time", f"{symbol}: event time {event_time} is "
                                             f"{(event_time - now_ms) / 1000:+.0f} s from Binance's clock as "
                                             "measured")
    if not next_funding:
        funding = None  # no funding scheduled: Binance's "0.00000000" (or "") is not a rate of zero
    return MarkPrice(symbol, event_time, mark, index, settle, funding, next_funding or None, mark_str,
                     index_str or None, settle_str or None, funding_str or None, average_str or None, kind)


_TIME = Annotated[int, msgspec.Meta(gt=0, le=2 ** 63 - 1)]  # orjson, the slow path, reads larger ones as floats
_MAX = sys.float_info.max
#: Finite (NaN and ±inf fail one of the two bounds), or ``""``: not sent (the older shape's ``"r":""``).
_DECIMAL = Annotated[float, msgspec.Meta(ge=-_MAX, le=_MAX)] | Literal[""]


class _Row(msgspec.Struct, gc=False):
    """An all-market row as the fast path takes it: any other type or value of any field (the time rules are
    constraints here) sends the frame the slow way."""

    s: str
    E: _TIME
    p: str
    e: Literal["markPriceUpdate"] = MARK_PRICE_EVENT
    ap: str | None = None
    i: str | None = None
    P: str | None = None
    r: str | None = None
    T: Annotated[int, msgspec.Meta(ge=0, le=2 ** 63 - 1)] = 0
    # UNSET, not None: a ``null`` is a defect (the slow path names it), an absent ``st`` is the older shape.
    st: int | msgspec.UnsetType = msgspec.UNSET


class _Numbers(msgspec.Struct, gc=False):
    """The :class:`_Row` strings as numbers, by msgspec's lax mode (in C), the price rules as bounds. It refuses some
    forms ``float()`` takes (``" 1"``, ``"1_0"``), which go the slow way: where it takes one, it equals ``float()``,
    converted or decoded alike (tests/binance/test_wire_fast.py)."""

    p: Annotated[float, msgspec.Meta(gt=0, le=_MAX)]
    ap: _DECIMAL | None = None
    i: _DECIMAL | None = None
    P: _DECIMAL | None = None
    r: _DECIMAL | None = None


class _AllMarket(msgspec.Struct, gc=False):
    stream: str
    data: list[_Row]


class _AllMarketNumbers(msgspec.Struct, gc=False):  # the numbers decoded from the text (tests compare the two)
    data: list[_Numbers]


_ALL_MARKET = msgspec.json.Decoder(_AllMarket)
_ALL_MARKET_NUMBERS = msgspec.json.Decoder(_AllMarketNumbers, strict=False)
_NUMBERS = list[_Numbers]


def _parse_all_market(raw: str | bytes, now_ms: int | None, max_skew_ms: int) -> ParsedFrame | None:
    """The combined all-market frame, every row well formed: typed decoding (msgspec, in C) instead of a dict per
    row, and the same rules as :func:`parse_item`. ``None`` for anything else (another shape, any defect), which
    the slow path then parses and names: so both paths accept exactly the same rows (``tests/binance``).
    Numbers are converted from the decoded strings (in C), a quarter cheaper than decoding the text again (bench/)."""
    try:
        frame = _ALL_MARKET.decode(raw)
        if not frame.stream.startswith(ALL_MARKET_PREFIX):
            return None
        numbers = msgspec.convert(frame.data, _NUMBERS, strict=False, from_attributes=True)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    updates: list[MarkPrice] = []
    append = updates.append
    other: dict[str, int] = {}
    valid, no_limit, unset = _VALID, now_ms is None, msgspec.UNSET
    for row, number in zip(frame.data, numbers):
        kind = row.st
        if kind is not unset and kind != 1:
            name = SYMBOL_KINDS.get(kind, f"symbol_type_{kind}")
            other[name] = other.get(name, 0) + 1
            continue
        symbol, event_time, next_funding = row.s, row.E, row.T
        if symbol not in valid and not is_valid_symbol(symbol):
            return None
        if not (no_limit or abs(event_time - now_ms) <= max_skew_ms):  # type: ignore[operator]
            return None
        index_str, settle_str, funding_str = row.i, row.P, row.r
        # The number is tested through its string: "" is not sent, while a rate of 0.0 is one (hence the ignores:
        # mypy cannot see that a number whose string is not "" is not "" either).
        append(MarkPrice(symbol, event_time, number.p,
                         number.i if index_str else None,  # type: ignore[arg-type]
                         number.P if settle_str else None,  # type: ignore[arg-type]
                         number.r if next_funding and funding_str else None,  # type: ignore[arg-type]
                         next_funding or None, row.p, index_str or None, settle_str or None, funding_str or None,
                         row.ap or None, None if kind is unset else kind))
    event_ms = frame.data[-1].E if frame.data else None
    return ParsedFrame(updates, [], 0, other, True, event_ms)


def is_mark_price_stream(stream: Any) -> bool:
    """True for ``!markPrice@arr``, ``!markPrice@arr@1s`` and per-symbol ``<sym>@markPrice[@1s]`` streams."""
    return isinstance(stream, str) and "markprice" in stream.lower()


def parse_frame(raw: str | bytes, now_ms: int | None = None, max_skew_ms: int = 0) -> ParsedFrame:
    """Parse one WebSocket text frame (``now_ms``/``max_skew_ms``: see :func:`parse_item`).

    Raises :class:`FrameError` (``bad_json`` / ``bad_shape``) when the frame as a whole is unusable. Defective
    items are reported in ``defects`` and skipped, so one bad item never costs the rest of the frame. Payloads of
    other streams or event types (e.g. a subscription reply ``{"result": null, "id": 1}``) count as ``ignored``.
    """
    fast = _parse_all_market(raw, now_ms, max_skew_ms)
    return fast if fast is not None else parse_frame_generic(raw, now_ms, max_skew_ms)


def parse_frame_generic(raw: str | bytes, now_ms: int | None = None, max_skew_ms: int = 0) -> ParsedFrame:
    """:func:`parse_frame` without the fast path: every shape, every defect named (the reference the fast path is
    tested against)."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("bad_json", f"not JSON: {exc}") from None
    data: Any = message
    stream = None
    if isinstance(message, dict) and "stream" in message:
        stream = message["stream"]
        if not is_mark_price_stream(stream):
            return ParsedFrame([], [], 1, {}, False)
        data = message.get("data")
    all_market = isinstance(data, list) and (stream is None or str(stream).startswith(ALL_MARKET_PREFIX))
    if isinstance(data, dict):
        if "e" not in data and "s" not in data:
            return ParsedFrame([], [], 1, {}, False, None, request_reply(message) if stream is None else None)
        data = [data]
    elif not isinstance(data, list):
        raise FrameError("bad_shape", f"payload is {type(data).__name__}, not an object or array")
    updates: list[MarkPrice] = []
    defects: list[tuple[str, str]] = []
    other: dict[str, int] = {}
    ignored = 0
    event_ms = None
    for item in data:
        if isinstance(item, dict):
            if item.get("e", MARK_PRICE_EVENT) != MARK_PRICE_EVENT:
                ignored += 1
                continue
            if type(stamp := item.get("E")) is int:
                event_ms = stamp
            kind = item.get("st", 1)
            if kind != 1:
                if type(kind) is not int:
                    defects.append(("bad_symbol_type", f"st={str(kind)[:20]!r}"))
                    continue
                name = SYMBOL_KINDS.get(kind, f"symbol_type_{kind}")
                other[name] = other.get(name, 0) + 1
                continue
        try:
            updates.append(parse_item(item, now_ms, max_skew_ms))
        except FrameError as exc:
            defects.append((exc.kind, str(exc)))
    return ParsedFrame(updates, defects, ignored, other, all_market, event_ms)


def request_reply(message: dict[str, Any]) -> tuple[int | None, str | None] | None:
    """A reply to a ``SUBSCRIBE``/``UNSUBSCRIBE``, as ``(id, error text or None)``; ``None``: not a reply.

    Acknowledged: ``{"result": null, "id": 1}``. Refused, as servers send it: ``{"error": {"code": 2, "msg":
    "Invalid request: too many parameters"}, "id": 1}``; and as Binance's docs print it (Error Messages, also in
    ``tests/data/binance_docs.jsonl``): ``{"code": 2, "msg": "Invalid request: ..."}``, an ``id`` only sometimes.
    """
    request_id = message.get("id")
    if type(request_id) is not int:
        request_id = None
    error = message.get("error")
    if isinstance(error, dict):
        pass
    elif "code" in message and "msg" in message:
        error = message
    elif "result" in message and request_id is not None:
        return request_id, None
    else:
        return None
    return request_id, f"error {str(error.get('code'))[:20]}: {str(error.get('msg'))[:200]!r}"


def symbol_stream(symbol: str) -> str:
    """The per-symbol stream name (Binance wants lower case)."""
    return f"{symbol.lower()}@markPrice@1s"


def subscription_message(method: str, streams: list[str], request_id: int) -> str:
    """``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}``; Binance replies ``{"result": null,
    "id": n}`` (an ``ignored`` payload to :func:`parse_frame`)."""
    return orjson.dumps({"method": method, "params": streams, "id": request_id}).decode()
