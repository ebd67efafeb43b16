"""Binance's reference data and its file ``.funding_reference.json``: the format, its writer and its readers.

The daemon fetches it over REST (see :mod:`.reference_fetch`) and writes it next to the state file; the API reads
it to re-serve ``/fapi/v1/exchangeInfo`` and ``/fapi/v1/fundingInfo``, to tell a listed symbol without data yet
(retryable) from one Binance does not list, and to add funding terms to its answers. Shape (schema version 1)::

    {"schemaVersion": 1, "refreshIntervalS": 900,
     "exchangeInfo": {...Binance's object as received...}, "exchangeInfoAt": 1791382993.1,
     "fundingInfo": [{"symbol": "BLZUSDT", "adjustedFundingRateCap": "0.02500000",
                      "adjustedFundingRateFloor": "-0.02500000", "fundingIntervalHours": 8,
                      "disclaimer": false}], "fundingInfoAt": 1791382993.2,
     "interestRates": {"BTCUSDT": "0.00010000"}, "interestRatesAt": 1791382993.3}

``fundingInfo`` lists only symbols whose interval or cap/floor Binance adjusted; every other perpetual settles every
8 hours (Binance's documentation). Times are Unix seconds; a part never fetched has ``null`` for its time.

In memory exchangeInfo stays the JSON text it arrived as (about 1 MB for 900 symbols; parsed it would be 4-5 MB
of the daemon's 40 MB budget), plus a slim index of what decisions need: ``symbol``, ``status``, ``contractType``.
The API re-serves the text as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from volspike_funding.core.errors import StateUnreadable
from volspike_funding.core.persist import atomic_replace
from volspike_funding.core.value_parsers import binance_decimal
from volspike_funding.binance.wire import symbol_problem

SCHEMA_VERSION = 1
DEFAULT_FUNDING_INTERVAL_HOURS = 8
PERPETUAL_TYPES = frozenset({"PERPETUAL", "TRADIFI_PERPETUAL"})
INDEX_FIELDS = ("symbol", "status", "contractType", "quoteAsset")


def symbol_index(info: Any) -> dict[str, dict[str, Any]]:
    """A parsed exchangeInfo's entries by symbol, slimmed to :data:`INDEX_FIELDS` (entries without a plausible
    symbol are left out): what :attr:`ReferenceData.symbols` holds, and what the fetcher counts before believing a
    new copy."""
    entries = info.get("symbols") if isinstance(info, dict) else None
    return {e["symbol"]: {k: e.get(k) for k in INDEX_FIELDS} for e in entries or ()
            if isinstance(e, dict) and symbol_problem(e.get("symbol")) is None}


@dataclass(frozen=True)
class ReferenceData:
    #: Binance's exchangeInfo object, as JSON text.
    exchange_info: bytes | None = None
    exchange_info_at: float | None = None
    funding_info: list[dict[str, Any]] | None = None
    funding_info_at: float | None = None
    interest_rates: dict[str, str] = field(default_factory=dict)
    interest_rates_at: float | None = None
    refresh_interval_s: float = 900.0

    def with_(self, **changes: Any) -> "ReferenceData":
        return replace(self, **changes)

    @cached_property
    def symbols(self) -> dict[str, dict[str, Any]]:
        """:func:`symbol_index` of the exchangeInfo text."""
        try:
            return symbol_index(orjson.loads(self.exchange_info) if self.exchange_info else {})
        except orjson.JSONDecodeError:
            return {}

    @property
    def known(self) -> bool:
        """exchangeInfo has been fetched: listing decisions can be made."""
        return bool(self.symbols)

    @cached_property
    def upper_index(self) -> dict[str, str]:
        return {k.upper(): k for k in self.symbols if k.isascii()}

    def resolve(self, symbol: str) -> str | None:
        if symbol in self.symbols:
            return symbol
        return self.upper_index.get(symbol.upper()) if symbol.isascii() else None

    @cached_property
    def trading(self) -> frozenset[str]:
        """Listed symbols whose ``status`` is ``TRADING``: each must have data, from one stream or another."""
        return frozenset(s for s, e in self.symbols.items() if e.get("status") == "TRADING")

    @cached_property
    def usdt_perpetuals(self) -> frozenset[str]:
        """Trading USDT perpetuals: the volume script's universe, whose klines the market feed keeps."""
        return frozenset(s for s, e in self.symbols.items() if e.get("status") == "TRADING"
                         and e.get("contractType") == "PERPETUAL" and e.get("quoteAsset") == "USDT")

    @cached_property
    def _funding_by_symbol(self) -> dict[str, dict[str, Any]]:
        return {e["symbol"]: e for e in self.funding_info or () if isinstance(e, dict) and isinstance(e.get("symbol"), str)}

    @cached_property
    def terms(self) -> dict[str, dict[str, Any]]:
        """:meth:`funding_terms` of every listed symbol, computed once per copy (answers read it per symbol)."""
        return {symbol: self.funding_terms(symbol) for symbol in self.symbols}

    def funding_terms(self, symbol: str) -> dict[str, Any]:
        """``fundingIntervalHours``, ``fundingRateCap``, ``fundingRateFloor``, ``contractType``; ``None`` where
        unknown. The interval is 8 h for a perpetual that fundingInfo (once fetched) does not list."""
        entry = self.symbols.get(symbol) or {}
        contract_type = entry.get("contractType") if isinstance(entry.get("contractType"), str) else None
        adjusted = self._funding_by_symbol.get(symbol) or {}
        interval = adjusted.get("fundingIntervalHours")
        if not isinstance(interval, int) or isinstance(interval, bool) or interval <= 0:
            known_default = self.funding_info is not None and contract_type in PERPETUAL_TYPES
            interval = DEFAULT_FUNDING_INTERVAL_HOURS if known_default else None
        return {"fundingIntervalHours": interval,
                "fundingRateCap": binance_decimal(adjusted.get("adjustedFundingRateCap")),
                "fundingRateFloor": binance_decimal(adjusted.get("adjustedFundingRateFloor")),
                "contractType": contract_type}

    def age(self, now: float) -> float | None:
        """Age of the exchangeInfo copy (what listing decisions rest on); ``None`` before the first fetch."""
        return None if self.exchange_info_at is None else max(0.0, now - self.exchange_info_at)

    def ages(self, now: float) -> dict[str, float | None]:
        def age(at: float | None) -> float | None:
            return None if at is None else round(max(0.0, now - at), 3)
        return {"exchangeInfo": age(self.exchange_info_at), "fundingInfo": age(self.funding_info_at),
                "interestRates": age(self.interest_rates_at)}

    def document(self) -> dict[str, Any]:
        info = orjson.Fragment(self.exchange_info) if self.exchange_info else None
        return {"schemaVersion": SCHEMA_VERSION, "refreshIntervalS": self.refresh_interval_s,
                "exchangeInfo": info, "exchangeInfoAt": self.exchange_info_at,
                "fundingInfo": self.funding_info, "fundingInfoAt": self.funding_info_at,
                "interestRates": self.interest_rates, "interestRatesAt": self.interest_rates_at}


def listing(data: "ReferenceData | None", symbol: str) -> tuple[str, str | None, str | None]:
    """What Binance's listing says of ``symbol``: ``(verdict, listed name, exchangeInfo status)`` with verdict
    ``"unknown"`` (no exchangeInfo yet: "not listed" cannot be told from "not fetched"), ``"unlisted"``,
    ``"trading"`` or ``"not trading"`` (listed with another status: SETTLING, PENDING_TRADING, ...)."""
    if data is None or not data.known:
        return "unknown", None, None
    key = data.resolve(symbol)
    if key is None:
        return "unlisted", None, None
    status = data.symbols[key].get("status")
    # A missing status claims nothing: the symbol stays retryable rather than final on a guess.
    return ("not trading" if isinstance(status, str) and status != "TRADING" else "trading"), key, status


def _time(raw: Any) -> float | None:
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0 else None


def parse(data: bytes) -> ReferenceData:
    """Parse the file; a part with the wrong shape is dropped (as if never fetched), never trusted."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateUnreadable("invalid", f"reference file is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != SCHEMA_VERSION:
        raise StateUnreadable("invalid", "reference file has an unknown schema")
    info = doc.get("exchangeInfo") if isinstance(doc.get("exchangeInfo"), dict) else None
    funding = doc.get("fundingInfo") if isinstance(doc.get("fundingInfo"), list) else None
    raw_rates = doc.get("interestRates")
    rates: dict[str, Any] = raw_rates if isinstance(raw_rates, dict) else {}
    interval = doc.get("refreshIntervalS")
    return ReferenceData(orjson.dumps(info) if info else None, _time(doc.get("exchangeInfoAt")) if info else None,
                         funding, _time(doc.get("fundingInfoAt")) if funding is not None else None,
                         {k: v for k, v in rates.items() if isinstance(v, str)},
                         _time(doc.get("interestRatesAt")) if rates else None,
                         float(interval) if isinstance(interval, (int, float)) and interval > 0 else 900.0)


def read(path: Path) -> ReferenceData:
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        raise StateUnreadable("missing", f"{path} does not exist yet") from None
    except OSError as exc:
        raise StateUnreadable("unreadable", f"cannot read {path}: {exc.strerror}") from None


def write(path: Path, data: ReferenceData) -> None:
    """Replace the file atomically (it changes a few times an hour, so its ~1 MB is no concern)."""
    atomic_replace(path, orjson.dumps(data.document()))


def interest_rates(premium_index: Any) -> dict[str, str]:
    """``interestRate`` by symbol from a bulk ``/fapi/v1/premiumIndex`` answer (the stream does not carry it)."""
    rates: dict[str, str] = {}
    for item in premium_index if isinstance(premium_index, list) else ():
        if isinstance(item, dict) and isinstance(item.get("symbol"), str) and isinstance(item.get("interestRate"), str):
            rates[item["symbol"]] = item["interestRate"]
    return rates
