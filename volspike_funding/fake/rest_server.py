"""A fake Binance USDⓈ-M REST API on loopback, in Binance's exact wire format, with fault injection.

Routes: ``/fapi/v1/exchangeInfo``, ``/fapi/v1/klines``, ``/fapi/v1/premiumIndex`` (bulk and single),
``/fapi/v1/openInterest``, ``/fapi/v1/ticker/24hr``. Every answer carries ``X-MBX-USED-WEIGHT-1M``; ``counts``
has the requests per path; ``fail()`` injects 429/418 (with ``Retry-After``), 5xx or delays.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .http_fake import HttpFake, Reply, Request
from .market import DELIVERY_SYMBOL, Market

HOUR_MS = 3_600_000
WEIGHTS = {"/fapi/v1/premiumIndex": 10, "/fapi/v1/ticker/24hr": 40}


class FakeBinanceRest(HttpFake):
    def __init__(self, market: Market | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.market = market or Market()
        #: Fixed "now" in ms for klines and answers; ``None`` follows the real clock.
        self.now_ms: int | None = None
        #: Per symbol: ``(prev_quote_volume, curr_quote_volume, open, close)`` of the last two hourly candles.
        self.volumes: dict[str, tuple[float, float, float, float]] = {}
        self.open_interest: dict[str, float] = {}
        self.quote_volume_24h: dict[str, float] = {}
        self.used_weight = 0
        #: Extra exchangeInfo entries (e.g. a non-TRADING perpetual) for universe filtering tests.
        self.extra_symbols: list[dict[str, Any]] = [
            {"symbol": "OLDCOINUSDT", "contractType": "PERPETUAL", "quoteAsset": "USDT", "status": "SETTLING"},
            {"symbol": "BTCBUSD", "contractType": "PERPETUAL", "quoteAsset": "BUSD", "status": "TRADING"}]
        self.routes = {("GET", "/fapi/v1/exchangeInfo"): self._exchange_info, ("GET", "/fapi/v1/klines"): self._klines,
                       ("GET", "/fapi/v1/premiumIndex"): self._premium_index,
                       ("GET", "/fapi/v1/openInterest"): self._open_interest,
                       ("GET", "/fapi/v1/ticker/24hr"): self._ticker}

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        self.used_weight += WEIGHTS.get(h.path.split("?")[0], 1)  # as Binance counts: per request, by endpoint
        super()._dispatch(h)

    def now(self) -> int:
        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def _reply(self, body: Any, status: int = 200) -> Reply:
        return Reply(status, body, {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)})

    def _invalid_symbol(self) -> Reply:
        return self._reply({"code": -1121, "msg": "Invalid symbol."}, 400)

    def _exchange_info(self, request: Request) -> Reply:
        symbols = [{"symbol": name, "pair": name.split("_")[0],
                    "contractType": "CURRENT_QUARTER" if name == DELIVERY_SYMBOL else "PERPETUAL",
                    "status": "TRADING", "baseAsset": name.removesuffix("USDT").split("_")[0], "quoteAsset": "USDT"}
                   for name in self.market.contracts]
        return self._reply({"timezone": "UTC", "serverTime": self.now(), "symbols": symbols + self.extra_symbols})

    def _klines(self, request: Request) -> Reply:
        symbol = request.query.get("symbol", "")
        if symbol not in self.market.contracts:
            return self._invalid_symbol()
        limit = int(request.query.get("limit", "500"))
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

    def _premium_index(self, request: Request) -> Reply:
        now = self.now()
        symbol = request.query.get("symbol")
        if symbol is None:
            return self._reply([self.market.premium_index(c, now) for c in self.market.contracts.values()])
        contract = self.market.contracts.get(symbol)
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
