"""A deterministic simulated USDⓈ-M market: the data behind the fake exchange's WebSocket and REST answers.

Prices random-walk each step; funding rates drift; every perpetual shares the 8-hourly funding schedule. It holds
one delivery contract (``r == ""``, ``T == 0`` on the wire) and one non-ASCII symbol, as Binance does.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from typing import Any

#: Well-known contracts at plausible prices; the rest are synthetic names at random price levels.
_REAL = {"BTCUSDT": 97000.0, "ETHUSDT": 3100.0, "SOLUSDT": 140.0, "BNBUSDT": 610.0, "XRPUSDT": 0.62,
         "DOGEUSDT": 0.16, "ADAUSDT": 0.45, "1000PEPEUSDT": 0.0112, "LINKUSDT": 14.2, "AVAXUSDT": 27.5,
         "SUIUSDT": 1.9, "TRXUSDT": 0.21, "LTCUSDT": 84.0, "DOTUSDT": 5.6, "USDCUSDT": 1.0001}
DELIVERY_SYMBOL = "BTCUSDT_261225"
NON_ASCII_SYMBOL = "币安人生USDT"
FUNDING_PERIOD_MS = 8 * 3600 * 1000


@dataclass
class Contract:
    symbol: str
    mark: float
    funding: float | None  # None for delivery contracts
    quote_volume: float


def fmt(value: float) -> str:
    return f"{value:.8f}"


class Market:
    def __init__(self, n_symbols: int = 700, seed: int = 7) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        names = list(_REAL) + [NON_ASCII_SYMBOL]
        names += [f"SYN{i:03d}USDT" for i in range(max(0, n_symbols - len(names) - 1))]
        self.contracts: dict[str, Contract] = {}
        for name in names[: max(n_symbols - 1, 1)]:
            self.contracts[name] = Contract(name, _REAL.get(name) or round(10 ** self._rng.uniform(-3, 4.8), 6),
                                            round(self._rng.uniform(-0.0008, 0.0012), 8),
                                            10 ** self._rng.uniform(5, 9.5))
        self.contracts[DELIVERY_SYMBOL] = Contract(DELIVERY_SYMBOL, 98000.0, None, 2e8)
        self._pinned: set[str] = set()

    def set_mark(self, symbol: str, price: float) -> None:
        """Pin a symbol's mark price (it stops random-walking); for freshness tests and benchmarks."""
        with self._lock:
            self.contracts[symbol].mark = price
            self._pinned.add(symbol)

    def delist(self, symbol: str) -> None:
        """Stop sending a symbol, as Binance does for a delisted contract."""
        with self._lock:
            self.contracts.pop(symbol, None)

    def step(self) -> None:
        with self._lock:
            for c in self.contracts.values():
                if c.symbol not in self._pinned:
                    c.mark = max(c.mark * (1 + self._rng.gauss(0, 0.0004)), 1e-6)
                if c.funding is not None and self._rng.random() < 0.05:
                    c.funding = round(c.funding + self._rng.gauss(0, 0.00002), 8)

    def item(self, c: Contract, now_ms: int) -> dict[str, Any]:
        """One ``markPriceUpdate`` exactly as Binance sends it."""
        next_funding = 0 if c.funding is None else (now_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
        return {"e": "markPriceUpdate", "E": now_ms, "s": c.symbol, "p": fmt(c.mark), "i": fmt(c.mark * 0.9998),
                "P": fmt(c.mark * 0.9999), "r": "" if c.funding is None else fmt(c.funding), "T": next_funding}

    def items(self, now_ms: int) -> list[dict[str, Any]]:
        with self._lock:
            return [self.item(c, now_ms) for c in self.contracts.values()]

    def frame(self, now_ms: int, stream: str | None = "!markPrice@arr@1s") -> str:
        """The text of one frame: combined-stream wrapped when ``stream`` is given, else the raw array."""
        items = self.items(now_ms)
        payload: Any = items if stream is None else {"stream": stream, "data": items}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def premium_index(self, c: Contract, now_ms: int) -> dict[str, Any]:
        """REST ``/fapi/v1/premiumIndex`` entry for one contract, in Binance's field order."""
        item = self.item(c, now_ms)
        return {"symbol": c.symbol, "markPrice": item["p"], "indexPrice": item["i"],
                "estimatedSettlePrice": item["P"], "lastFundingRate": item["r"],
                "interestRate": "" if c.funding is None else "0.00010000", "nextFundingTime": item["T"],
                "time": now_ms}
