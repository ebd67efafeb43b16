"""Where the consumers get funding rates and mark prices: the local API, Binance REST, or both compared.

One call per scan on each side: ``GET {WS_FUNDING_API_URL}/batch`` (all symbols) and, when needed,
``GET /fapi/v1/premiumIndex`` without a symbol (weight 10). The symbol universes come from the local API's copy of
``/fapi/v1/exchangeInfo`` while it is at most an hour old (0 REST weight), from REST otherwise.
Modes (``FUNDING_SOURCE_MODE``):

- ``validate`` — both; every symbol's funding rate and mark price are compared and logged (see
  :mod:`.comparison_log`); the local value is used when present and fresh, REST otherwise.
- ``ws`` — local only; what is missing or stale there comes from REST when ``FUNDING_REST_FALLBACK`` is on (one
  ``premiumIndex?symbol=`` call per lacking symbol, weight 1 each, or one bulk call, weight 10, when that is
  cheaper), and is unknown otherwise.
- ``rest`` — REST only.

The local service gets a short timeout, no retries, and a circuit breaker: after a failure it is skipped for
``WS_FUNDING_BREAKER_S``, so a dead service costs one scan at most ``WS_FUNDING_TIMEOUT_S``. Unknown stays unknown:
a quote's values are ``None``, never 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import requests

from volspike_funding.binance.rest import BinanceRest
from volspike_funding.store.comparison_log import FUNDING, MARK, Comparison, ComparisonLog
from volspike_funding.core.errors import RateLimited, RestError
from volspike_funding.core.settings import Settings
from volspike_funding.core.value_parsers import binance_decimal

log = logging.getLogger("funding.source")


@dataclass(frozen=True)
class Quote:
    funding_rate: float | None
    mark_price: float | None
    source: str | None  # "ws", "rest", or None when unknown
    ws_age: float | None = None


UNKNOWN = Quote(None, None, None)
#: The local exchangeInfo copy is used for universes while at most this old (the daemon refreshes it every 15 min).
LOCAL_EXCHANGE_INFO_MAX_AGE_S = 3600.0
#: Request weights of ``premiumIndex``: without a symbol (every symbol) and with one.
BULK_WEIGHT, SINGLE_WEIGHT = 10, 1


def _number(raw: Any) -> float | None:
    """A JSON number from the local API, or ``None`` for null or anything else."""
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None


class LocalFundingClient:
    def __init__(self, base_url: str, *, timeout: float, breaker_s: float, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = base_url.rstrip("/") + "/batch"
        self.exchange_info_url = base_url.rstrip("/").removesuffix("/funding") + "/fapi/v1/exchangeInfo"
        # Loopback connects at once or is refused; the budget is mostly for a hung or slow server's answer.
        self._timeout = (timeout * 0.25, timeout * 0.75)
        self._breaker_s = breaker_s
        self._session = session or requests.Session()
        self._clock = clock
        self._open_until = 0.0
        self.calls = 0

    def fetch(self) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
        """Every symbol the local API knows (fresh items, or ``{"symbol", "error"}``), or ``None`` and why."""
        if self._clock() < self._open_until:
            return None, f"local API skipped for {self._open_until - self._clock():.0f} s more after a failure"
        self.calls += 1
        try:
            response = self._session.get(self.url, timeout=self._timeout)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            data = response.json()["data"]
            items = {item["symbol"]: item for item in data if isinstance(item, dict) and "symbol" in item}
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._open_until = self._clock() + self._breaker_s
            reason = f"local API unavailable ({type(exc).__name__}: {exc})"[:300]
            log.warning("%s; skipping it for %.0f s", reason, self._breaker_s)
            return None, reason
        return items, None


    def exchange_info(self, max_age_s: float) -> dict[str, Any] | None:
        """The local API's copy of Binance's exchangeInfo when it is at most ``max_age_s`` old, else ``None``."""
        if self._clock() < self._open_until:
            return None
        try:
            response = self._session.get(self.exchange_info_url, timeout=self._timeout)
            age = float(response.headers.get("X-Data-Age-Seconds", "inf"))
            body = response.json() if response.status_code == 200 else None
        except (requests.RequestException, ValueError) as exc:
            log.info("local exchangeInfo unavailable (%s); using REST", type(exc).__name__)
            return None
        if not isinstance(body, dict) or not isinstance(body.get("symbols"), list) or not age <= max_age_s:
            log.info("local exchangeInfo not usable (HTTP %s, age %s s); using REST", response.status_code, age)
            return None
        return body


class FundingSource:
    def __init__(self, settings: Settings, rest: BinanceRest, consumer: str, *,
                 local: LocalFundingClient | None = None) -> None:
        self.mode = settings.funding_mode
        # Said at start: the kill switch overriding an explicit mode must never be silent.
        self.switched_off = not settings.ws_funding_enabled
        self.overridden = settings.funding_source_mode if self.switched_off and settings.funding_source_mode not in (
            None, "rest") else None
        self.fallback = settings.funding_rest_fallback
        self.rest = rest
        self.local = local or LocalFundingClient(settings.ws_funding_api_url, timeout=settings.ws_funding_timeout_s,
                                                 breaker_s=settings.ws_funding_breaker_s)
        self.comparisons = ComparisonLog(consumer, funding_abs_tolerance=settings.funding_rate_abs_tolerance,
                                         price_rel_tolerance=settings.mark_price_rel_tolerance,
                                         kline_rel_tolerance=settings.kline_rel_tolerance)

    def describe(self) -> str:
        parts = [f"mode={self.mode}"]
        if self.switched_off:
            parts.append("(WS_FUNDING_ENABLED=false: REST only, the local service is never asked"
                         + (f"; FUNDING_SOURCE_MODE={self.overridden} ignored)" if self.overridden else ")"))
        if self.mode != "rest":
            parts.append(f"local={self.local.url}")
        parts.append(f"rest={self.rest.base_url}/fapi/v1/premiumIndex")
        if self.mode == "ws":
            parts.append(f"rest_fallback={'on' if self.fallback else 'off'}")
        return " ".join(parts)

    def exchange_info(self) -> dict[str, Any]:
        """exchangeInfo for the symbol universes: the local copy when fresh (0 weight), else one REST call
        (weight 1; raises :class:`RestError`)."""
        if self.mode != "rest":
            info = self.local.exchange_info(LOCAL_EXCHANGE_INFO_MAX_AGE_S)
            if info is not None:
                return info
        return self.rest.exchange_info()

    def _rest_quotes(self) -> dict[str, dict[str, Any]] | None:
        try:
            return {i["symbol"]: i for i in self.rest.premium_index_all() if isinstance(i, dict) and "symbol" in i}
        except (RestError, TypeError) as exc:
            log.warning("REST premiumIndex unavailable: %s", exc)
            return None

    def _rest_quotes_of(self, symbols: list[str]) -> dict[str, dict[str, Any]] | None:
        """The few symbols the local API lacks, one call each; one that fails stays unknown, a 429/418 ends it."""
        found: dict[str, dict[str, Any]] = {}
        for name in symbols:
            try:
                item = self.rest.get("/fapi/v1/premiumIndex", {"symbol": name}, weight=SINGLE_WEIGHT)
            except RateLimited as exc:
                log.warning("REST premiumIndex unavailable: %s", exc)
                break
            except RestError as exc:
                log.debug("REST premiumIndex %s unavailable: %s", name, exc)
                continue
            if isinstance(item, dict) and item.get("symbol") == name:
                found[name] = item
        return found or None

    def quotes(self, symbols: Iterable[str], compared_before: Iterable[Comparison] = ()) -> dict[str, Quote]:
        """One quote per symbol; values the sources cannot vouch for are ``None``. ``compared_before``: this
        scan's other comparisons (the volume script's candles), whose mismatch lines go with the scan's."""
        wanted = list(dict.fromkeys(symbols))
        local, _ = (None, None) if self.mode == "rest" else self.local.fetch()
        fresh: dict[str, dict[str, Any]] = {}
        missing = stale = 0
        if local is not None:
            for name in wanted:
                item = local.get(name)
                if item is None:
                    missing += 1
                elif "error" in item or item.get("stale"):
                    stale += 1
                else:
                    fresh[name] = item
        lacking = [name for name in wanted if name not in fresh]
        need_rest = self.mode in ("rest", "validate") or (self.fallback and bool(lacking))
        if need_rest and self.mode == "ws" and len(lacking) * SINGLE_WEIGHT < BULK_WEIGHT:
            remote = self._rest_quotes_of(lacking)  # one stale symbol costs 1 per loop, not the bulk call's 10
        else:
            remote = self._rest_quotes() if need_rest else None
        result: dict[str, Quote] = {}
        compared: list[Comparison] = list(compared_before)
        fallbacks = 0
        for name in wanted:
            ws, rest = fresh.get(name), remote.get(name) if remote else None
            if ws is not None and rest is not None and self.mode == "validate":
                compared += self._compare(name, ws, rest)
            if ws is not None:
                result[name] = Quote(_number(ws.get("fundingRate")), _number(ws.get("markPrice")), "ws",
                                     _number(ws.get("ageSeconds")))
            elif rest is not None:
                fallbacks += self.mode != "rest"
                result[name] = Quote(binance_decimal(rest.get("lastFundingRate")),
                                     binance_decimal(rest.get("markPrice")), "rest")
            else:
                result[name] = UNKNOWN
        if self.mode != "rest":
            self.comparisons.summary(self.mode, compared, ws_available=local is not None,
                                     rest_available=remote is not None or not need_rest, ws_missing=missing,
                                     ws_stale=stale,
                                     rest_fallbacks=fallbacks)
        return result

    def _compare(self, name: str, ws: dict[str, Any], rest: dict[str, Any]) -> list[Comparison]:
        out = []
        age = _number(ws.get("ageSeconds"))
        for field_name, ws_value, rest_value in (
                (FUNDING, _number(ws.get("fundingRate")), binance_decimal(rest.get("lastFundingRate"))),
                (MARK, _number(ws.get("markPrice")), binance_decimal(rest.get("markPrice")))):
            if ws_value is not None and rest_value is not None:
                out.append(self.comparisons.compare(name, field_name, rest_value, ws_value, age))
        return out
