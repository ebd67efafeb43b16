"""The Binance-compatible surface: ``/fapi/v1/*`` market-data routes that real clients read with only their base URL
changed (ccxt ``binanceusdm``, python-binance, Binance's own SDKs, binance-futures-connector).

Answers and errors are Binance's: ``{"code": ..., "msg": ...}``. A symbol Binance's known listing lacks is 400
``-1121``; one it lists but we have no fresh data for, or any well-formed symbol before exchangeInfo is known, is
503 ``-1001`` (retryable: a client falls back instead of deciding the symbol does not exist); one listed with a
status other than TRADING and without fresh data is 400 ``-1122`` naming the status (final: no data will come).
Any path or method not served here is 404/405 ``-1020`` (UNSUPPORTED_OPERATION), which clients treat as final:
``-1000`` is ccxt's retryable ``OperationFailed``, so a retry loop on an unserved route never ended. Every answer
carries ``X-Data-Age-Seconds`` where an age applies.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from volspike_funding.store.backend import StateReaderLike
from volspike_funding.store.view import View
from volspike_funding.store.reference import listing
from volspike_funding.store.statefile import age_of, binance_strings
from volspike_funding.binance.wire import MAX_SYMBOL_LENGTH, symbol_problem

ROUTES = ["/fapi/v1/premiumIndex", "/fapi/v1/exchangeInfo", "/fapi/v1/fundingInfo", "/fapi/v1/time",
          "/fapi/v1/ping", "/fapi/v1/klines", "/fapi/v1/ticker/24hr"]


class PremiumIndex(BaseModel):
    """Binance's ``/fapi/v1/premiumIndex`` item, byte-compatible (decimals as strings)."""

    symbol: str
    markPrice: str
    indexPrice: str
    estimatedSettlePrice: str
    lastFundingRate: str = Field(description="as Binance sent it: '0.00000000' (or '') when no funding is scheduled")
    interestRate: str = Field(description="from the hourly reference data; '' until known")
    nextFundingTime: int = Field(description="0 when no funding is scheduled")
    time: int = Field(description="Binance event time of the update, Unix ms")


class BinanceError(BaseModel):
    code: int
    msg: str


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": BinanceError} for code in (400, 404, 503)}
ERRORS[431] = {"description": "request head over 200 KiB, refused before routing ({\"detail\": {\"error\"}})"}
#: Binance's UNSUPPORTED_OPERATION: ccxt maps it to BadRequest, the connectors raise their client error with it.
NOT_SERVED_CODE = -1020


def binance_error(status: int, code: int, msg: str) -> Response:
    return Response(orjson.dumps({"code": code, "msg": msg}), status_code=status, media_type="application/json")


def not_served(method: str, path: str) -> dict[str, Any]:
    """The body for a path or method this service does not serve, in Binance's shape."""
    return {"code": NOT_SERVED_CODE, "msg": f"{method[:10]} {path[:80]} is not served here: this local read-only "
                                            f"service answers only GET {', '.join(ROUTES)} and /funding/*"}


def _json(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(body if isinstance(body, bytes) else orjson.dumps(body), status_code=status,
                    media_type="application/json", headers=headers)


def premium_index_item(record: dict[str, Any], view: View) -> dict[str, Any]:
    raw = binance_strings(record)
    ref = view.reference
    return {"symbol": record["symbol"], "markPrice": raw["markPrice"], "indexPrice": raw["indexPrice"],
            "estimatedSettlePrice": raw["estimatedSettlePrice"], "lastFundingRate": raw["lastFundingRate"],
            "interestRate": (ref.interest_rates.get(record["symbol"], "") if ref is not None else ""),
            "nextFundingTime": record.get("nextFundingTime") or 0, "time": record.get("eventTime") or 0}


class _Encoded:
    """Pre-encoded reference answers, re-encoded only when the reference data object changes."""

    def __init__(self) -> None:
        self._source: object = None
        self.exchange_info = b""
        self.funding_info = b""

    def update(self, view: View) -> None:
        ref = view.reference
        if ref is not None and ref is not self._source:
            self.exchange_info = ref.exchange_info or b""
            self.funding_info = orjson.dumps(ref.funding_info) if ref.funding_info is not None else b""
            self._source = ref


def binance_router(cache: StateReaderLike, stale_after_s: float) -> APIRouter:
    router = APIRouter(tags=["Binance-compatible"])
    encoded = _Encoded()

    def unavailable(what: str) -> Response:
        return binance_error(503, -1001, f"{what} is not available yet; please try again.")

    @router.get("/fapi/v1/premiumIndex", response_model=PremiumIndex | list[PremiumIndex], responses=ERRORS,
                summary="Mark price and funding rate (fresh symbols only)")
    async def premium_index(symbol: str | None = Query(None, description="Binance answers -1121 for any symbol it "
                                                                         "does not list, however malformed")
                            ) -> Response:
        view, now = cache.view, time.time()
        snap = view.snapshot
        if snap is None:
            return unavailable("Data")
        if symbol is not None:
            record = snap.lookup(symbol) if symbol and len(symbol) <= MAX_SYMBOL_LENGTH else None
            age = age_of(record, now) if record is not None else None
            if record is not None and age is not None and age <= stale_after_s:
                return _json(premium_index_item(record, view), {"X-Data-Age-Seconds": f"{age:.3f}"})
            verdict, listed, status = listing(view.reference, symbol)
            if verdict == "not trading":  # Binance's INVALID_SYMBOL_STATUS: final, where -1001 was retried for ever
                return binance_error(400, -1122, f"Invalid symbol status: {listed} is {status} on Binance, not "
                                                 "TRADING; no fresh data will come.")
            if record is not None:
                # Binance's "try again" error: a client library raises, and its caller can fall back to REST.
                return binance_error(503, -1001, f"Data stale ({age} s); please try again.")
            if verdict == "trading":
                return binance_error(503, -1001, f"No data yet for listed symbol {listed}; please try again.")
            if verdict == "unknown" and symbol_problem(symbol) is None:
                # Without exchangeInfo "not listed" cannot be told from "not fetched yet": -1121 would be final.
                return binance_error(503, -1001, f"No data yet for {symbol}, and Binance's listing is not known "
                                                 "yet; please try again.")
            return binance_error(400, -1121, "Invalid symbol.")
        fresh = [premium_index_item(r, view) for r in snap.symbols.values()
                 if (a := age_of(r, now)) is not None and a <= stale_after_s]
        if not fresh:
            return binance_error(503, -1001, "No fresh data for any symbol; please try again.")
        headers = {"X-Stale-Symbols": str(len(snap.symbols) - len(fresh))}
        ref = view.reference
        if ref is not None and ref.known:  # listed and trading, never any data: left out of the list, counted here
            headers["X-Missing-Symbols"] = str(sum(1 for s in ref.trading if s not in snap.symbols))
        return _json(fresh, headers)

    def reference_answer(part: str) -> Response:
        view = cache.view
        encoded.update(view)
        ref = view.reference
        body = encoded.exchange_info if part == "exchangeInfo" else encoded.funding_info
        if ref is None or not body:
            return unavailable(f"Reference data ({part})")
        at = ref.exchange_info_at if part == "exchangeInfo" else ref.funding_info_at
        # An unknown fetch time leaves the header out: an age of 0 would claim fresh data.
        return _json(body, None if at is None else {"X-Data-Age-Seconds": f"{max(0.0, time.time() - at):.3f}"})

    @router.get("/fapi/v1/exchangeInfo", summary="Binance's exchangeInfo as the daemon last fetched it",
                responses={200: {"content": {"application/json": {}}}, 503: {"model": BinanceError}})
    async def exchange_info() -> Response:
        return reference_answer("exchangeInfo")

    @router.get("/fapi/v1/fundingInfo", summary="Binance's fundingInfo (adjusted intervals and caps) as last fetched",
                responses={200: {"content": {"application/json": {}}}, 503: {"model": BinanceError}})
    async def funding_info() -> Response:
        return reference_answer("fundingInfo")

    @router.get("/fapi/v1/time", summary="This host's clock, as Binance's server time")
    async def server_time() -> Response:
        return _json({"serverTime": int(time.time() * 1000)})

    @router.get("/fapi/v1/ping", summary="Connectivity test")
    async def ping() -> Response:
        return _json({})

    # GET only: another method on a route we serve is 405 (the app's routing-error handler, in the same shape).
    @router.get("/fapi/{rest:path}", include_in_schema=False)
    async def other_fapi(rest: str) -> Response:
        return _json(not_served("GET", f"/fapi/{rest}"), status=404)

    return router
