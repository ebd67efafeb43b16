"""``GET /fapi/v1/klines`` and ``GET /fapi/v1/ticker/24hr`` from the daemon's market feed, in Binance's shapes.

Only what the feed holds is answered, and only whole: 1 h candles of trading USDT perpetuals, the open hour and the
``KEEP_CLOSED`` before it. Another interval, or a range reaching past what is kept, is a final 400 ``-1020``
(UNSUPPORTED_OPERATION, which clients do not retry) naming what is kept; never a shorter list passed off as the
answer. A feed that stopped (no ``!ticker@arr`` frame for ``FUNDING_STALE_AFTER_S``) or a symbol whose kline stream
is not acknowledged yet is 503 ``-1001`` (try again), and so is a closed hour whose final message has not come yet
(the first ~2 s of an hour; REST's copy is asked after ``FINAL_GRACE_MS``), with ``Retry-After: 1``: a candle missing
its last seconds is never passed off as Binance's. Binance sends nothing for an hour without trades: while the
symbol's stream was acknowledged before the hour opened and the feed is alive, its open candle is the zero-volume
candle at the last close, as Binance's REST answers it. Every answer carries ``X-Data-Age-Seconds`` (the feed's).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from volspike_funding.api import models
from volspike_funding.api.binance_routes import ERRORS, _json, binance_error
from volspike_funding.binance.wire import MAX_SYMBOL_LENGTH, symbol_problem
from volspike_funding.store.backend import MarketReaderLike
from volspike_funding.store.marketfile import MarketSnapshot

ROUTES = ["/fapi/v1/klines", "/fapi/v1/ticker/24hr"]
HOUR_MS = 3_600_000
#: Binance's largest ``limit`` for klines.
MAX_LIMIT = 1500


def _unsupported(msg: str) -> Response:
    return binance_error(400, -1020, msg)


def integer(name: str, raw: str | None, default: int | None, low: int, high: int) -> int | None | Response:
    """A query parameter as Binance checks it: digits only (``-1100``), within range (``-1130``)."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
        return binance_error(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                         f"'^[0-9]{{1,20}}$'.")
    value = int(raw)
    if not low <= value <= high:
        return binance_error(400, -1130, f"Data sent for parameter '{name}' is not valid.")
    return value


def select(rows: list[list[Any]], limit: int, start: int | None, end: int | None, now_ms: int,
           first_open: int | None = None) -> list[list[Any]] | str:
    """Binance's selection of ``limit`` rows (the newest, or the oldest from ``start``), or why the held rows
    cannot answer it whole. ``rows``: oldest first, contiguous hours ending at the open one; ``first_open``: the
    symbol's first hour on Binance when it is younger than the kept window (Binance answers a range reaching
    before a listing with the hours since it, and so do we)."""
    if not rows:
        return "no candles held"
    oldest, newest = rows[0][0], rows[-1][0]
    listed = first_open is not None and first_open >= oldest
    upper = min(end if end is not None else now_ms, newest + HOUR_MS - 1)
    if start is not None:
        first = -(-start // HOUR_MS) * HOUR_MS
        if listed:
            first = max(first, oldest)
        last = min(first + (limit - 1) * HOUR_MS, upper // HOUR_MS * HOUR_MS)
    else:
        last = upper // HOUR_MS * HOUR_MS
        first = last - (limit - 1) * HOUR_MS
        if listed:
            first = max(first, oldest)
    if first > last:
        return []
    if first < oldest:
        return (f"only the last {len(rows)} 1h candles are kept here (from openTime {oldest}); ask with a smaller "
                f"limit or a later startTime")
    return [r for r in rows if first <= r[0] <= last]


def contiguous(entry: dict[str, Any], snap: MarketSnapshot, now_ms: int) -> list[list[Any]] | str:
    """The symbol's rows as whole hours up to the open one, or why not."""
    rows = [r for r in entry.get("rows") or () if isinstance(r, list) and len(r) == 12]
    since = entry.get("since")
    open_hour = now_ms // HOUR_MS * HOUR_MS
    if not isinstance(since, (int, float)):
        return "its kline stream is not acknowledged yet"
    if rows and rows[-1][0] < open_hour:
        if (since + snap.shift) * 1000 > open_hour or rows[-1][0] != open_hour - HOUR_MS:
            return "no candle of the open hour yet"
        close = rows[-1][4]  # no trades this hour: Binance's REST answers this candle
        rows.append([open_hour, close, close, close, close, "0", open_hour + HOUR_MS - 1, "0", 0, "0", "0", "0"])
    for before, after in zip(rows, rows[1:]):
        if after[0] - before[0] != HOUR_MS:
            rows = [r for r in rows if r[0] >= after[0]]  # serve the whole run ending now, not across a hole
    return rows or "no candles held"


def unfinal(entry: dict[str, Any], rows: list[list[Any]], now_ms: int) -> str | None:
    """Why ``rows`` are not the closed hours' last word (a closed row whose final message has not come yet, nor
    REST's copy), or ``None``. The batch is strict where a Binance client is not: an alert judged on a candle
    missing its last seconds would differ from one judged on REST's."""
    final = {r[0]: f for r, f in zip(entry.get("rows") or (), entry.get("final") or ()) if isinstance(r, list)}
    for row in rows:
        if row[6] < now_ms and final.get(row[0]) is not True:
            return f"the candle opened at {row[0]} closed but is not final yet"
    return None


def batch(snap: MarketSnapshot, limit: int, now_ms: int) -> tuple[dict[str, list[list[Any]]], dict[str, str]]:
    """``/market/klines/batch``'s answer: each kept symbol's ``limit`` newest rows, whole and final where closed,
    or why not."""
    answered: dict[str, list[list[Any]]] = {}
    unavailable: dict[str, str] = {}
    for symbol, entry in snap.klines.items():
        rows = contiguous(entry, snap, now_ms) if isinstance(entry, dict) else "malformed entry"
        chosen = rows if isinstance(rows, str) else select(rows, limit, None, None, now_ms)
        if not isinstance(chosen, str):
            chosen = unfinal(entry, chosen, now_ms) or chosen
        if isinstance(chosen, str):
            unavailable[symbol] = chosen
        else:
            answered[symbol] = chosen
    return answered, unavailable


def market_health(snap: MarketSnapshot, now: float, stale_after_s: float) -> dict[str, Any]:
    """The market feed's health (:class:`~.models.MarketHealth`): the routes' own rule for unhealthy, and the
    backfill's state, a pause Binance imposed above all — a 418 bans this host's IP from all of Binance's REST, so
    every REST fallback on the droplet fails until it ends."""
    problem = snap.problem(now, stale_after_s)
    backfill = snap.backfill
    until = snap.number("pausedUntil", backfill)
    until = None if until is None else until + snap.shift
    by = backfill.get("pausedBy") if until is not None and until > now else None
    warnings = []
    if by is not None and until is not None:
        when = datetime.fromtimestamp(until, timezone.utc).strftime("%H:%M:%S")
        warnings.append(f"Binance answered {by} to the klines backfill: its REST calls wait until {when} UTC "
                        f"({until - now:.0f} s)" + (" — a 418 bans this host's IP from Binance's REST, so every "
                                                    "REST fallback here fails until then" if str(by) == "418" else ""))
    age = snap.feed_age(now)
    pending, error = snap.number("pending", backfill), backfill.get("lastError")
    return {"status": "unhealthy" if problem else "healthy", "connected": snap.connected,
            "dataAgeSeconds": None if age is None else round(age, 3), "klineSymbols": len(snap.klines),
            "tickers": len(snap.tickers), "backfillPending": None if pending is None else int(pending),
            "backfillPausedUntil": until if by is not None else None, "backfillPausedBy": by,
            "backfillLastError": error if isinstance(error, str) else None,
            "reasons": [problem] if problem else [], "warnings": warnings}


def market_router(market: MarketReaderLike | None, stale_after_s: float) -> APIRouter:
    router = APIRouter(tags=["Binance-compatible"])

    def feed(now: float) -> tuple[MarketSnapshot, float] | tuple[int, int, str]:
        """The market file and its age, or ``(status, Binance code, message)`` why it cannot answer."""
        if market is None:
            return 400, -1020, "klines and tickers are not kept here (FUNDING_MARKET_ENABLED is off)"
        snap = market.get()
        problem = snap.problem(now, stale_after_s)
        if problem is not None:
            return 503, -1001, f"{problem}; please try again."
        return snap, snap.feed_age(now) or 0.0

    def binance_feed(now: float) -> tuple[MarketSnapshot, float] | Response:
        got = feed(now)
        return binance_error(*got) if len(got) == 3 else got

    @router.get("/market/health", response_model=models.MarketHealth, tags=["VolSpike"],
                responses={**models.ERRORS, 503: {"model": models.MarketHealth}},
                summary="The klines and tickers feed alone: 200 healthy, 503 unhealthy, 404 when it is off")
    async def health() -> Response:
        if market is None:
            raise models.api_error(404, "Market feed off", reason="FUNDING_MARKET_ENABLED is off: no klines or "
                                                                  "tickers are kept")
        body = market_health(market.get(), time.time(), stale_after_s)
        age = body["dataAgeSeconds"]
        return _json(body, {} if age is None else {"X-Data-Age-Seconds": f"{age:.3f}"},
                     200 if body["status"] == "healthy" else 503)

    @router.get("/fapi/v1/klines", responses=ERRORS, summary="1 h candles as Binance's REST klines (what is kept)")
    async def klines(symbol: str = Query(""), interval: str = Query(""), limit: str | None = Query(None),
                     startTime: str | None = Query(None), endTime: str | None = Query(None)) -> Response:
        now = time.time()
        got = binance_feed(now)
        if isinstance(got, Response):
            return got
        snap, age = got
        numbers = [integer("limit", limit, 500, 1, MAX_LIMIT), integer("startTime", startTime, None, 0, 2 ** 62),
                   integer("endTime", endTime, None, 0, 2 ** 62)]
        for bad in numbers:
            if isinstance(bad, Response):
                return bad
        count, start, end = numbers
        if not symbol or len(symbol) > MAX_SYMBOL_LENGTH or symbol_problem(symbol) is not None:
            return binance_error(400, -1121, "Invalid symbol.")
        if interval != "1h":
            return _unsupported(f"interval {interval[:10]} is not kept here: only 1h candles are")
        entry = snap.klines.get(symbol)
        if not isinstance(entry, dict):
            return _unsupported(f"klines of {symbol} are not kept here (only trading USDT perpetuals are)")
        now_ms = int(now * 1000)
        rows = contiguous(entry, snap, now_ms)
        first_open = entry.get("firstOpen") if isinstance(entry.get("firstOpen"), int) else None
        chosen = rows if isinstance(rows, str) else select(rows, count, start, end, now_ms,  # type: ignore[arg-type]
                                                           first_open)
        if isinstance(chosen, str):
            if isinstance(rows, str):
                return binance_error(503, -1001, f"Klines of {symbol}: {chosen}; please try again.")
            return _unsupported(f"klines of {symbol}: {chosen}")
        pending = unfinal(entry, chosen, now_ms)
        if pending is not None:  # a closed hour missing its last seconds is not Binance's candle: ask again
            answer = binance_error(503, -1001, f"Klines of {symbol}: {pending}; please try again.")
            answer.headers["Retry-After"] = "1"
            return answer
        return _json(chosen, {"X-Data-Age-Seconds": f"{age:.3f}"})

    @router.get("/market/klines/batch", responses=models.ERRORS, tags=["VolSpike"],
                summary="The last candles of every kept symbol, for the volume script (one call per scan)")
    async def klines_batch(limit: int = Query(3, ge=1, le=27)) -> Response:
        """``{"interval": "1h", "dataAgeS": ..., "klines": {symbol: [rows]}, "unavailable": {symbol: why}}``: the
        ``limit`` newest rows in Binance's shape, whole or not at all (the symbol is then in ``unavailable``)."""
        now = time.time()
        got = feed(now)
        if len(got) == 3:
            raise models.api_error(got[0], "Market data unavailable", reason=got[2])
        snap, age = got
        answered, unavailable = batch(snap, limit, int(now * 1000))
        return _json({"interval": "1h", "dataAgeS": round(age, 3), "klines": answered, "unavailable": unavailable},
                     {"X-Data-Age-Seconds": f"{age:.3f}"})

    @router.get("/fapi/v1/ticker/24hr", responses=ERRORS, summary="24 h tickers from !ticker@arr")
    async def ticker_24hr(symbol: str | None = Query(None)) -> Response:
        got = binance_feed(time.time())
        if isinstance(got, Response):
            return got
        snap, age = got
        headers = {"X-Data-Age-Seconds": f"{age:.3f}"}
        tickers = snap.tickers
        if symbol is None:
            return _json([{k: v for k, v in t.items() if k != "E"} for t in tickers.values()], headers)
        ticker = tickers.get(symbol)
        if not isinstance(ticker, dict):
            if len(symbol) > MAX_SYMBOL_LENGTH or symbol_problem(symbol) is not None or symbol not in snap.klines:
                return binance_error(400, -1121, "Invalid symbol.")
            return binance_error(503, -1001, f"No 24 h ticker for {symbol} yet; please try again.")
        return _json({k: v for k, v in ticker.items() if k != "E"}, headers)

    return router
