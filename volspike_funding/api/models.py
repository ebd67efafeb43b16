"""The HTTP API's response shapes: pydantic models (for ``/docs`` and ``/openapi.json``) and the builders.

Handlers build plain dicts with the functions here and serialise them with orjson; the models document exactly
those dicts. Field names are a contract with the operators' scripts and the consumer package.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, Field

from volspike_funding.store.view import View
from volspike_funding.store.reference import ReferenceData, listing
from volspike_funding.store.statefile import age_of
from volspike_funding.binance.wire import MAX_SYMBOL_LENGTH, symbol_problem

#: The parser's symbol rule (:func:`.wire.symbol_problem`) as the OpenAPI document declares it, so that what the
#: schema allows is what the server accepts.
SYMBOL_PATTERN = rf"^\w{{1,{MAX_SYMBOL_LENGTH}}}$"
SYMBOL_LIST_PATTERN = rf"^[\s,]*\w{{1,{MAX_SYMBOL_LENGTH}}}(\s*,[\s,]*\w{{1,{MAX_SYMBOL_LENGTH}}})*[\s,]*$"
NO_TERMS = {"fundingIntervalHours": None, "fundingRateCap": None, "fundingRateFloor": None, "contractType": None}
#: Largest ``symbols=`` list accepted by ``/funding/batch`` (Binance lists ~900 USDⓈ-M contracts), and its length.
MAX_BATCH_SYMBOLS = 1000
MAX_BATCH_CHARS = 16_000


class SymbolFunding(BaseModel):
    symbol: str
    markPrice: float | None = Field(description="Mark price; null when unknown")
    fundingRate: float | None = Field(description="Current funding rate; null for delivery contracts")
    nextFundingTime: int | None = Field(description="Next funding time, Unix ms; null when none")
    indexPrice: float | None
    updatedAt: float = Field(description="When the daemon received this symbol's latest update, Unix s")
    ageSeconds: float = Field(description="Seconds since updatedAt, at the time of this answer")
    estimatedSettlePrice: float | None
    eventTime: int | None = Field(description="Binance event time of the update, Unix ms")
    stale: bool = Field(description="ageSeconds exceeds FUNDING_STALE_AFTER_S")
    fundingIntervalHours: int | None = Field(description="hours between settlements (fundingInfo; 8 when not "
                                                         "adjusted); null for dated contracts or when unknown")
    fundingRateCap: float | None = Field(description="adjusted cap from fundingInfo; null when not adjusted/unknown")
    fundingRateFloor: float | None = Field(description="adjusted floor from fundingInfo; null when not adjusted/unknown")
    contractType: str | None = Field(description="exchangeInfo's contractType, e.g. PERPETUAL, TRADIFI_PERPETUAL")


class BatchError(BaseModel):
    symbol: str
    error: str = Field(description="'Symbol not found' (Binance's known listing lacks it), 'Not trading' (listed "
                                   "with another status, no fresh data: final), 'No data yet' (listed, or the "
                                   "listing not known yet: retryable) or 'Data stale'")
    ageSeconds: float | None = None
    maxAgeSeconds: float | None = None
    reason: str | None = None
    listingStatus: str | None = Field(None, description="exchangeInfo's status; null when the listing is unknown")


class BatchResponse(BaseModel):
    data: list[SymbolFunding | BatchError]
    found: int = Field(description="symbols answered with fresh data")
    missing: int = Field(description="symbols not found or stale")
    total: int = Field(description="symbols asked for, duplicates folded")


class MarketHealth(BaseModel):
    status: str = Field(description="'healthy' or 'unhealthy' (the klines and tickers routes answer 503 then)")
    connected: bool = Field(description="the market feed's connection to Binance")
    dataAgeSeconds: float | None = Field(description="since the last !ticker@arr frame; null before the first")
    klineSymbols: int
    tickers: int
    backfillPending: int | None = Field(description="symbols waiting for REST candles")
    backfillPausedUntil: float | None = Field(description="while Binance's 429 or 418 holds the backfill: until when")
    backfillPausedBy: str | None = Field(description="'429' or '418' while a pause runs; a 418 is an IP ban")
    backfillLastError: str | None
    reasons: list[str] = Field(description="why the feed is unhealthy; empty when healthy")
    warnings: list[str] = Field(description="a pause Binance imposed on the backfill, above all")


class Health(BaseModel):
    status: str = Field(description="'healthy' or 'unhealthy'")
    websocketConnected: bool
    symbolCount: int
    uptimeSeconds: float | None = Field(description="seconds since the daemon started; null when not running")
    lastConnectedTime: float | None
    messagesReceived: int
    reconnectAttempts: int
    oldestDataAgeSeconds: float | None
    newestDataAgeSeconds: float | None
    staleSymbols: int
    staleShare: float = Field(description="staleSymbols / symbolCount; unhealthy past FUNDING_MAX_STALE_SHARE")
    staleSymbolNames: list[str] = Field(description="up to 50 stale symbols, e.g. delisted contracts")
    daemonAlive: bool
    stateReadError: str | None = Field(description="the state file's current read problem, if any")
    invalidRecords: int = Field(description="malformed records in the state file, skipped (see warnings)")
    clockSkewSeconds: float | None = Field(description="Binance's event time minus this host's receive time "
                                                       "(median of recent frames, latency included); null while the "
                                                       "daemon is not alive")
    referenceDataAgeSeconds: float | None = Field(description="age of the exchangeInfo copy; null before the first")
    referenceSymbols: int = Field(description="symbols exchangeInfo lists")
    perSymbolStreams: int = Field(description="listed symbols the all-market stream lacks, subscribed one by "
                                              "one (as Binance acknowledged)")
    daemonsAlive: int | None = Field(description="with the shared store: daemons with a live status; null with the "
                                                 "state file (one daemon)")
    daemonsConnected: int | None = Field(description="with the shared store: live daemons connected to Binance")
    reasons: list[str] = Field(description="why the service is unhealthy; empty when healthy")
    warnings: list[str] = Field(description="worth a look, but the data served is still right")
    market: MarketHealth | None = Field(None, description="the klines and tickers feed (null when "
                                                          "FUNDING_MARKET_ENABLED is off); its problems are warnings "
                                                          "here, never the funding status (GET /market/health)")


class ErrorDetail(BaseModel):
    error: str
    model_config = {"extra": "allow"}


class ErrorBody(BaseModel):
    detail: ErrorDetail


#: 431: a request head over 200 KiB is refused before routing (see :mod:`.api_protocol`).
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 431, 503)}


def api_error(status: int, error: str, **context: Any) -> HTTPException:
    """The one error shape: ``{"detail": {"error": "<short reason>", ...context}}``."""
    return HTTPException(status_code=status, detail={"error": error, **context})


def check_symbol(symbol: str) -> str:
    """The wire parser's rule (:func:`.wire.symbol_problem`): what the daemon would never store is a 400."""
    problem = symbol_problem(symbol)
    if problem is not None:
        raise api_error(400, "Invalid symbol", reason=problem)
    return symbol


def symbol_body(key: str, record: dict[str, Any], now: float, stale_after: float,
                reference: ReferenceData | None = None) -> dict[str, Any]:
    """The public answer for one stored symbol, in the field order the API has always used."""
    get = record.get
    age = age_of(record, now)
    age = None if age is None else round(age, 3)
    terms = reference.terms.get(key, NO_TERMS) if reference is not None else NO_TERMS
    return {"symbol": key, "markPrice": get("markPrice"), "fundingRate": get("fundingRate"),
            "nextFundingTime": get("nextFundingTime"), "indexPrice": get("indexPrice"),
            "updatedAt": get("updatedAt"), "ageSeconds": age, "estimatedSettlePrice": get("estimatedSettlePrice"),
            "eventTime": get("eventTime"), "stale": age is None or age > stale_after, **terms}


def symbol_answer(view: View, name: str, now: float, stale_after: float) -> tuple[dict[str, Any], bool]:
    """The answer for one asked-for symbol and whether it is fresh data; otherwise ``{"symbol", "error", ...}``
    (``Symbol not found``, ``Not trading``, ``No data yet`` or ``Data stale``), as a batch item and as the
    single-symbol route's error detail. "Not found" needs Binance's listing: until exchangeInfo is known a symbol
    without data is "No data yet" (retryable), never "not found" (final)."""
    snap = view.snapshot
    key = snap.resolve(name) if snap is not None else None
    body = symbol_body(key, snap.raw[key], now, stale_after, view.reference) if snap is not None and key else None
    if body is not None and not body["stale"]:
        return body, True
    verdict, listed, status = listing(view.reference, name)
    if verdict == "not trading":  # no data will come: a final answer, not one to retry for ever
        return {"symbol": listed, "error": "Not trading", "reason": f"Binance lists this symbol as {status}, not "
                "TRADING: no fresh data will come", "listingStatus": status,
                **({"ageSeconds": body["ageSeconds"]} if body is not None else {})}, False
    if body is not None:
        return {"symbol": body["symbol"], "error": "Data stale", "ageSeconds": body["ageSeconds"],
                "maxAgeSeconds": stale_after}, False
    if verdict == "trading":
        return {"symbol": listed, "error": "No data yet",
                "reason": "Binance lists this symbol but has sent no data for it yet (or its market is closed)",
                "listingStatus": status}, False
    if verdict == "unknown":
        return {"symbol": name, "error": "No data yet", "reason": "no data for this symbol, and Binance's listing "
                "(exchangeInfo) is not known yet, so whether it exists cannot be told; retry later",
                "listingStatus": None}, False
    return {"symbol": name, "error": "Symbol not found"}, False
