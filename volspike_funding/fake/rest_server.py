"""A fake Binance USDⓈ-M REST API on loopback, in Binance's exact wire format, with fault injection.

Routes: ``/fapi/v1/exchangeInfo``, ``/fapi/v1/fundingInfo``, ``/fapi/v1/klines``, ``/fapi/v1/premiumIndex`` (bulk
and single), ``/fapi/v1/openInterest``, ``/fapi/v1/ticker/24hr``. Every answer carries ``X-MBX-USED-WEIGHT-1M``; ``counts``
has the requests per path; ``fail()`` injects 429/418 (with ``Retry-After``), 5xx or delays.

The weight is counted as Binance does (dilettante-trading/polyoxide ``docs/specs/binance/OBSERVED.md``, measured on
2026-10-07): the window is the UTC clock minute (it falls back to the new request's weight at every ``:00``
second, not a sliding 60 s), and a refused request (a 400, or an injected 429/5xx here) still costs its route's
weight.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable

from .http_fake import HttpFake, Reply, Request
from .market import Contract, Market

HOUR_MS = 3_600_000
#: Binance's documented request weights (1 where not listed); ``premiumIndex`` is 1 with a symbol.
WEIGHTS = {"/fapi/v1/premiumIndex": 10, "/fapi/v1/ticker/24hr": 40, "/fapi/v1/fundingInfo": 0}


class FakeBinanceRest(HttpFake):
    def __init__(self, market: Market | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.market = market or Market()
        #: Fixed "now" in ms for klines and answers; ``None`` follows the real clock.
        self.now_ms: int | None = None
        #: Per symbol: ``(prev_quote_volume, curr_quote_volume, open, close)`` of the last two hourly candles.
        self.volumes: dict[str, tuple[float, float, float, float]] = {}
        #: ``klines`` answers from the market's candles (the kline streams' own), except for symbols in
        #: :attr:`volumes` (the older fixture: two set candles at a fixed ``now_ms``). Off (the default): that fixture for all.
        self.market_candles = False
        self.open_interest: dict[str, float] = {}
        self.quote_volume_24h: dict[str, float] = {}
        self.used_weight = 0
        #: The UTC clock minute ``used_weight`` belongs to; ``clock`` is replaceable so a test can cross a minute.
        self.clock: Callable[[], float] = time.time
        self.weight_minute = int(self.clock() // 60)
        #: Weight of every request since start, across minutes (what a test or benchmark spent in all).
        self.total_weight = 0
        #: ``/fapi/v1/fundingInfo``: only symbols with an adjusted interval or cap/floor, as Binance answers.
        self.funding_info: list[dict[str, Any]] = [
            {"symbol": "SOLUSDT", "adjustedFundingRateCap": "0.02000000", "adjustedFundingRateFloor": "-0.02000000",
             "fundingIntervalHours": 4, "disclaimer": False},
            {"symbol": "DOGEUSDT", "adjustedFundingRateCap": "0.03000000",
             "adjustedFundingRateFloor": "-0.03000000", "fundingIntervalHours": 1, "disclaimer": False}]
        #: Symbols exchangeInfo does not list yet, though the stream carries them: Binance's stream shows a new
        #: listing first (issue 23.9).
        self.hidden: set[str] = set()
        #: Extra exchangeInfo entries (e.g. a non-TRADING perpetual) for universe filtering tests.
        self.extra_symbols: list[dict[str, Any]] = [
            {**self.market.exchange_symbol(Contract("OLDCOINUSDT", 1.0, 0.0001, 1e6)), "status": "SETTLING"},
            {**self.market.exchange_symbol(Contract("BTCBUSD", 97000.0, 0.0001, 1e6)), "quoteAsset": "BUSD",
             "marginAsset": "BUSD", "baseAsset": "BTC"}]
        self.routes = {("GET", "/fapi/v1/exchangeInfo"): self._exchange_info, ("GET", "/fapi/v1/klines"): self._klines,
                       ("GET", "/fapi/v1/fundingInfo"): lambda request: self._reply(self.funding_info),
                       ("GET", "/fapi/v1/premiumIndex"): self._premium_index,
                       ("GET", "/fapi/v1/openInterest"): self._open_interest,
                       ("GET", "/fapi/v1/ticker/24hr"): self._ticker}

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        single = path == "/fapi/v1/premiumIndex" and "symbol=" in query
        minute = int(self.clock() // 60)
        with self._lock:  # the server is threaded: concurrent requests must each add their weight
            if minute != self.weight_minute:
                self.weight_minute, self.used_weight = minute, 0
            # Per request, by endpoint, before the answer is known: a refused request costs the same.
            weight = 1 if single else WEIGHTS.get(path, 1)
            self.used_weight += weight
            self.total_weight += weight
        super()._dispatch(h)

    def common_headers(self) -> dict[str, str]:
        """On every answer, an injected 429 or 5xx too: Binance reports the weight on refusals as well."""
        return {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}

    def now(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def _reply(self, body: Any, status: int = 200) -> Reply:
        return Reply(status, body, {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)})

    def _invalid_symbol(self) -> Reply:
        return self._reply({"code": -1121, "msg": "Invalid symbol."}, 400)

    def truncate_exchange_info(self, keep: int, count: int = 1) -> None:
        """The next ``count`` exchangeInfo answers list only the first ``keep`` symbols (an HTTP 200 that is
        short: what a daemon must not believe when the stream carries more)."""
        body = self._exchange_info_body()
        self.fail("/fapi/v1/exchangeInfo", 200, count, body={**body, "symbols": body["symbols"][:keep]})

    def _exchange_info(self, request: Request) -> Reply:
        return self._reply(self._exchange_info_body())

    def _exchange_info_body(self) -> dict[str, Any]:
        hidden = self.hidden
        symbols = [self.market.exchange_symbol(c) for c in self.market.listed().values() if c.symbol not in hidden]
        return {"timezone": "UTC", "serverTime": self.now(), "futuresType": "U_MARGINED",
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 2400}],
                "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True,
                                                   "autoAssetExchange": "-10000"}],
                "symbols": symbols + self.extra_symbols}

    def _klines(self, request: Request) -> Reply:
        symbol = request.query.get("symbol", "")
        if self.market.find(symbol) is None:
            return self._invalid_symbol()
        limit = int(request.query.get("limit", "500"))
        if symbol not in self.volumes and self.market_candles:
            return self._candle_rows(symbol, limit)
        now = self.now()
        open_hour = now // HOUR_MS * HOUR_MS
        prev_v, curr_v, o, c = self.volumes.get(symbol, (1_000_000.0, 1_000_000.0, 100.0, 100.0))
        # In an hour's first minute the "current" candle is the one that just closed (the :00 scan).
        current = 1 if now % HOUR_MS < 60_000 else 0
        candles = []
        for k in range(limit - 1, -1, -1):  # k hours before the open candle; k == 0 is the open one
            start = open_hour - k * HOUR_MS
            volume = curr_v if k == current else prev_v if k == current + 1 else 1000.0
            first, last = (o, c) if k == current else (o, o)
            candles.append([start, f"{first:.4f}", f"{max(first, last):.4f}", f"{min(first, last):.4f}",
                            f"{last:.4f}", "1000.000", start + HOUR_MS - 1, f"{volume:.4f}", 1234, "500.000",
                            f"{volume / 2:.4f}", "0"])
        return self._reply(candles)

    def _candle_rows(self, symbol: str, limit: int) -> Reply:
        """The last ``limit`` hours as the kline streams send them (:class:`.market.Candles`); a quiet symbol's are
        zero-volume candles at its price, as Binance answers for hours without trades."""
        candles = self.market.candles
        now = candles.now_ms()
        open_hour = now // HOUR_MS * HOUR_MS
        first = candles.first_open.get(symbol, 0)  # a young listing: Binance has no candle before it
        return self._reply([candles.row(symbol, open_hour - k * HOUR_MS, now) for k in range(limit - 1, -1, -1)
                            if open_hour - k * HOUR_MS >= first])

    def _premium_index(self, request: Request) -> Reply:
        now = self.now()
        symbol = request.query.get("symbol")
        if symbol is None:
            return self._reply([self.market.premium_index(c, now) for c in
                                (*self.market.contracts.values(), *self.market.stream_only.values())])
        contract = self.market.find(symbol)
        return self._reply(self.market.premium_index(contract, now)) if contract else self._invalid_symbol()

    def _open_interest(self, request: Request) -> Reply:
        symbol = request.query.get("symbol", "")
        if symbol not in self.market.contracts:
            return self._invalid_symbol()
        value = self.open_interest.get(symbol, 50_000.0)
        return self._reply({"openInterest": f"{value:.3f}", "symbol": symbol, "time": self.now()})

    def _ticker(self, request: Request) -> Reply:
        return self._reply([{"symbol": name, "lastPrice": f"{c.mark:.8f}",
                             "quoteVolume": f"{self.quote_volume_24h.get(name, c.quote_volume):.2f}"}
                            for name, c in self.market.contracts.items()])
