"""The HTTP API's response shapes: pydantic models (for ``/docs`` and ``/openapi.json``) and the builders.

Handlers build plain dicts with the functions here and serialise them with orjson; the models document exactly
those dicts. Field names are a contract with the operators' scripts and the consumer package.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, Field

from .api_state import View
from .statefile import age_of, binance_strings

MAX_SYMBOL_LENGTH = 40
#: Largest ``symbols=`` list accepted by ``/funding/batch`` (Binance lists ~700 USDⓈ-M contracts).
MAX_BATCH_SYMBOLS = 1000


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


class BatchError(BaseModel):
    symbol: str
    error: str = Field(description="'Symbol not found' or 'Data stale'")
    ageSeconds: float | None = None
    maxAgeSeconds: float | None = None


class BatchResponse(BaseModel):
    data: list[SymbolFunding | BatchError]
    found: int = Field(description="symbols answered with fresh data")
    missing: int = Field(description="symbols not found or stale")
    total: int = Field(description="symbols asked for, duplicates folded")


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
    staleSymbolNames: list[str] = Field(description="up to 50 stale symbols, e.g. delisted contracts")
    daemonAlive: bool
    stateReadError: str | None = Field(description="the state file's current read problem, if any")
    reasons: list[str] = Field(description="why the service is unhealthy; empty when healthy")


class PremiumIndex(BaseModel):
    """Binance's ``/fapi/v1/premiumIndex`` item, byte-compatible (decimals as strings)."""

    symbol: str
    markPrice: str
    indexPrice: str
    estimatedSettlePrice: str
    lastFundingRate: str = Field(description="'' for delivery contracts, as Binance sends it")
    interestRate: str = Field(description="not carried by the stream: always ''")
    nextFundingTime: int
    time: int = Field(description="Binance event time of the update, Unix ms")


class ErrorDetail(BaseModel):
    error: str
    model_config = {"extra": "allow"}


class ErrorBody(BaseModel):
    detail: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 503)}


def api_error(status: int, error: str, **context: Any) -> HTTPException:
    """The one error shape: ``{"detail": {"error": "<short reason>", ...context}}``."""
    return HTTPException(status_code=status, detail={"error": error, **context})


def check_symbol(symbol: str) -> str:
    if not symbol or not symbol.strip():
        raise api_error(400, "Invalid symbol", reason="empty")
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise api_error(400, "Invalid symbol", reason=f"longer than {MAX_SYMBOL_LENGTH} characters")
    if not symbol.isprintable() or any(c.isspace() for c in symbol):
        raise api_error(400, "Invalid symbol", reason="control or space characters")
    return symbol


def symbol_body(key: str, record: dict[str, Any], now: float, stale_after: float) -> dict[str, Any]:
    """The public answer for one stored symbol, in the field order the API has always used."""
    get = record.get
    age = age_of(record, now)
    age = None if age is None else round(age, 3)
    return {"symbol": key, "markPrice": get("markPrice"), "fundingRate": get("fundingRate"),
            "nextFundingTime": get("nextFundingTime"), "indexPrice": get("indexPrice"),
            "updatedAt": get("updatedAt"), "ageSeconds": age, "estimatedSettlePrice": get("estimatedSettlePrice"),
            "eventTime": get("eventTime"), "stale": age is None or age > stale_after}


def symbol_answer(view: View, name: str, now: float, stale_after: float) -> tuple[dict[str, Any], bool]:
    """The answer for one asked-for symbol and whether it is fresh data; otherwise ``{"symbol", "error", ...}``
    (``Symbol not found`` or ``Data stale``), as a batch item and as the single-symbol route's error detail."""
    key = view.snapshot.resolve(name) if view.snapshot is not None else None
    if key is None:
        return {"symbol": name, "error": "Symbol not found"}, False
    body = symbol_body(key, view.symbols[key], now, stale_after)
    if body["stale"]:
        return {"symbol": body["symbol"], "error": "Data stale", "ageSeconds": body["ageSeconds"],
                "maxAgeSeconds": stale_after}, False
    return body, True


def premium_index_item(record: dict[str, Any]) -> dict[str, Any]:
    raw = binance_strings(record)
    return {"symbol": record["symbol"], "markPrice": raw["markPrice"], "indexPrice": raw["indexPrice"],
            "estimatedSettlePrice": raw["estimatedSettlePrice"], "lastFundingRate": raw["lastFundingRate"],
            "interestRate": "", "nextFundingTime": record.get("nextFundingTime") or 0,
            "time": record.get("eventTime") or 0}
