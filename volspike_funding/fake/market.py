"""A deterministic simulated USDⓈ-M market: the data behind the fake exchange's WebSocket and REST answers.

It follows what Binance sends today (``wire="2026"``, see ``tests/data/PROVENANCE.md``):

- the all-market frame carries ``n_symbols`` USDⓈ-M rows with ``ap`` and ``"st":1`` — perpetuals, one dated
  contract (``"r":"0.00000000"``, ``"T":0``), one TradFi perpetual that the stream does carry (``XAUUSDT``) and one
  non-ASCII symbol — plus COIN-M rows (``"st":2``), which are not USDⓈ-M data;
- TradFi perpetuals the all-market stream excludes (:attr:`Market.stream_only`) come only on per-symbol streams;
- a listed, trading symbol that sends nothing (its market is closed) is in :attr:`Market.silent`.

``wire="legacy"`` is the documented older shape: no ``ap``/``st``, ``"r":""`` for dated contracts, no COIN-M rows.
Prices random-walk each step; funding rates drift; perpetuals share the 8-hourly funding schedule.
"""

from __future__ import annotations

import json
import random
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

#: Well-known contracts at plausible prices; the rest are synthetic names at random price levels.
_REAL = {"BTCUSDT": 97000.0, "ETHUSDT": 3100.0, "SOLUSDT": 140.0, "BNBUSDT": 610.0, "XRPUSDT": 0.62,
         "DOGEUSDT": 0.16, "ADAUSDT": 0.45, "1000PEPEUSDT": 0.0112, "LINKUSDT": 14.2, "AVAXUSDT": 27.5,
         "SUIUSDT": 1.9, "TRXUSDT": 0.21, "LTCUSDT": 84.0, "DOTUSDT": 5.6, "USDCUSDT": 1.0001}
DELIVERY_SYMBOL = "BTCUSDT_261225"
NON_ASCII_SYMBOL = "币安人生USDT"
TRADFI_IN_STREAM = "XAUUSDT"
#: COIN-M rows on the USDⓈ-M stream since 2026-06-30 (``"st":2``).
COIN_M_SYMBOLS = {"BTCUSD_PERP": 97010.0, "ETHUSD_PERP": 3101.0}
#: TradFi perpetuals that only per-symbol streams carry, and one whose market is closed (listed, silent).
STREAM_ONLY_SYMBOLS = {"TSLAUSDT": 412.5, "NVDAUSDT": 181.2}
SILENT_SYMBOL = "AAPLUSDT"
FUNDING_PERIOD_MS = 8 * 3600 * 1000
TRADFI = "TRADIFI_PERPETUAL"


@dataclass
class Contract:
    symbol: str
    mark: float
    funding: float | None  # None for dated contracts
    quote_volume: float
    contract_type: str = "PERPETUAL"
    symbol_type: int = 1  # Binance's "st": 1 USDⓈ-M, 2 COIN-M
    underlying_type: str = "COIN"


def fmt(value: float) -> str:
    return f"{value:.8f}"


class Market:
    def __init__(self, n_symbols: int = 700, seed: int = 7, *, wire: str = "2026", price_drift: float = 0.0004,
                 funding_drift: float = 0.00002) -> None:
        if wire not in ("2026", "legacy"):
            raise ValueError(f"wire must be '2026' or 'legacy', not {wire!r}")
        self.wire = wire
        #: Standard deviations of each step's relative mark-price move and of a funding rate's occasional jump
        #: (5 % of steps). A funding jump of 2e-5 exceeds the comparison's 1e-5 tolerance, so a test comparing a
        #: REST read with a WebSocket read a moment later must hold the market still (:meth:`still`).
        self.price_drift = price_drift
        self.funding_drift = funding_drift
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        special = [DELIVERY_SYMBOL] + ([TRADFI_IN_STREAM] if wire == "2026" and n_symbols >= 100 else [])
        names = list(_REAL) + [NON_ASCII_SYMBOL]
        names += [f"SYN{i:03d}USDT" for i in range(max(0, n_symbols - len(names) - len(special)))]
        #: USDⓈ-M contracts of the all-market stream.
        self.contracts: dict[str, Contract] = {}
        for name in names[: max(n_symbols - len(special), 1)]:
            self.contracts[name] = self._perpetual(name, _REAL.get(name))
        self.contracts[DELIVERY_SYMBOL] = Contract(DELIVERY_SYMBOL, 98000.0, None, 2e8, "CURRENT_QUARTER")
        if TRADFI_IN_STREAM in special:
            self.contracts[TRADFI_IN_STREAM] = self._perpetual(TRADFI_IN_STREAM, 4100.0, TRADFI, "COMMODITY")
        #: Other products' rows on the same stream (not USDⓈ-M, not in USDⓈ-M exchangeInfo).
        self.coin_m: dict[str, Contract] = {} if wire == "legacy" else {
            name: Contract(name, price, 0.0001, 1e8, symbol_type=2) for name, price in COIN_M_SYMBOLS.items()}
        #: Listed, trading USDⓈ-M contracts sent only on their own ``<symbol>@markPrice@1s`` stream.
        self.stream_only: dict[str, Contract] = {} if wire == "legacy" else {
            name: self._perpetual(name, price, TRADFI, "EQUITY") for name, price in STREAM_ONLY_SYMBOLS.items()}
        #: Listed, trading, and never sent at all (market closed).
        self.silent: dict[str, Contract] = {} if wire == "legacy" else {
            SILENT_SYMBOL: self._perpetual(SILENT_SYMBOL, 230.0, TRADFI, "EQUITY")}
        self._pinned: set[str] = set()
        #: Hourly candles and 24 h tickers of the same contracts (the kline and ticker streams, REST klines).
        self.candles = Candles(self)

    def _perpetual(self, name: str, price: float | None, contract_type: str = "PERPETUAL",
                   underlying: str = "COIN") -> Contract:
        return Contract(name, price or round(10 ** self._rng.uniform(-3, 4.8), 6),
                        round(self._rng.uniform(-0.0008, 0.0012), 8), 10 ** self._rng.uniform(5, 9.5),
                        contract_type, 1, underlying)

    def listed(self) -> dict[str, Contract]:
        """Every contract USDⓈ-M exchangeInfo lists (COIN-M rows are not among them)."""
        return {**self.contracts, **self.stream_only, **self.silent}

    def find(self, symbol: str) -> Contract | None:
        return self.contracts.get(symbol) or self.stream_only.get(symbol) or self.silent.get(symbol)

    def usdt_perpetuals(self) -> list[str]:
        """The symbols whose klines the market feed keeps (USDT perpetuals on the all-market stream), sorted."""
        with self._lock:
            return sorted(s for s, c in self.contracts.items() if c.contract_type == "PERPETUAL" and s.endswith("USDT"))

    def set_mark(self, symbol: str, price: float) -> None:
        """Pin a symbol's mark price (it stops random-walking); for freshness tests and benchmarks."""
        with self._lock:
            contract = self.find(symbol)
            assert contract is not None, symbol
            contract.mark = price
            self._pinned.add(symbol)

    def list_new(self, symbol: str, price: float, *, stream_only: bool = False) -> None:
        """A new listing: on the all-market stream, or (a TradFi perpetual) only on its own stream."""
        with self._lock:
            table = self.stream_only if stream_only else self.contracts
            table[symbol] = self._perpetual(symbol, price, TRADFI if stream_only else "PERPETUAL",
                                            "EQUITY" if stream_only else "COIN")

    def delist(self, symbol: str) -> None:
        """Stop sending a symbol, as Binance does for a delisted contract."""
        with self._lock:
            for table in (self.contracts, self.stream_only, self.silent):
                table.pop(symbol, None)

    @contextmanager
    def still(self) -> Iterator["Market"]:
        """No price or funding moves inside the block (frames keep coming, fresh): two reads a moment apart agree."""
        with self._lock:
            saved = self.price_drift, self.funding_drift
            self.price_drift = self.funding_drift = 0.0
        try:
            yield self
        finally:
            with self._lock:
                self.price_drift, self.funding_drift = saved

    def step(self) -> None:
        with self._lock:
            for c in (*self.contracts.values(), *self.stream_only.values(), *self.coin_m.values()):
                if c.symbol not in self._pinned and self.price_drift:
                    c.mark = max(c.mark * (1 + self._rng.gauss(0, self.price_drift)), 1e-6)
                if c.funding is not None and self.funding_drift and self._rng.random() < 0.05:
                    c.funding = round(c.funding + self._rng.gauss(0, self.funding_drift), 8)

    def item(self, c: Contract, now_ms: int) -> dict[str, Any]:
        """One ``markPriceUpdate`` exactly as Binance sends it (field order of the 2026 captures)."""
        next_funding = 0 if c.funding is None else (now_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS
        if self.wire == "legacy":
            return {"e": "markPriceUpdate", "E": now_ms, "s": c.symbol, "p": fmt(c.mark), "i": fmt(c.mark * 0.9998),
                    "P": fmt(c.mark * 0.9999), "r": "" if c.funding is None else fmt(c.funding), "T": next_funding}
        return {"e": "markPriceUpdate", "E": now_ms, "s": c.symbol, "p": fmt(c.mark), "ap": fmt(c.mark),
                "P": fmt(c.mark * 0.9999), "i": fmt(c.mark * 0.9998),
                "r": fmt(0.0 if c.funding is None else c.funding), "T": next_funding, "st": c.symbol_type}

    def items(self, now_ms: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = [self.item(c, now_ms) for c in self.contracts.values()]
            # COIN-M rows are interleaved in the captures (30 of 745); where exactly does not matter to a parser.
            rows[len(rows) // 2:len(rows) // 2] = [self.item(c, now_ms) for c in self.coin_m.values()]
            return rows

    def frame(self, now_ms: int, stream: str | None = "!markPrice@arr@1s") -> str:
        """The text of one frame: combined-stream wrapped when ``stream`` is given, else the raw array."""
        items = self.items(now_ms)
        payload: Any = items if stream is None else {"stream": stream, "data": items}
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def symbol_frame(self, symbol: str, now_ms: int, wrapped: bool = True) -> str | None:
        """One per-symbol stream frame, or ``None`` when the symbol sends nothing (silent, unknown, COIN-M)."""
        with self._lock:
            contract = self.contracts.get(symbol) or self.stream_only.get(symbol)
            if contract is None:
                return None
            item = self.item(contract, now_ms)
        payload: Any = {"stream": f"{symbol.lower()}@markPrice@1s", "data": item} if wrapped else item
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

    def premium_index(self, c: Contract, now_ms: int) -> dict[str, Any]:
        """REST ``/fapi/v1/premiumIndex`` entry for one contract, in Binance's field order."""
        item = self.item(c, now_ms)
        return {"symbol": c.symbol, "markPrice": item["p"], "indexPrice": item["i"],
                "estimatedSettlePrice": item["P"], "lastFundingRate": item["r"],
                "interestRate": "" if c.funding is None else "0.00010000", "nextFundingTime": item["T"],
                "time": now_ms}

    def exchange_symbol(self, c: Contract) -> dict[str, Any]:
        """One ``exchangeInfo`` symbol entry with every field of Binance's documented example."""
        dated = c.contract_type not in ("PERPETUAL", TRADFI)
        base = c.symbol.split("_")[0].removesuffix("USDT")
        return {"symbol": c.symbol, "pair": c.symbol.split("_")[0], "contractType": c.contract_type,
                "deliveryDate": 1798185600000 if dated else 4133404800000, "onboardDate": 1569398400000,
                "status": "TRADING", "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
                "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
                "underlyingType": c.underlying_type, "underlyingSubType": [], "settlePlan": 0,
                "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "4529764",
                             "tickSize": "0.01"},
                            {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
                            {"filterType": "MARKET_LOT_SIZE", "maxQty": "120", "stepSize": "0.001",
                             "minQty": "0.001"},
                            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                            {"filterType": "MIN_NOTIONAL", "notional": "5"},
                            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                             "multiplierDecimal": "4"}],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                               "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"]}


HOUR_MS = 3_600_000


class Candles:
    """Hourly candles consistent between the fake's kline streams and its REST ``klines``: a closed hour is a pure
    function of (symbol, hour), the open one grows with the time into the hour; ``offset_ms`` moves the fake's
    clock (a test crosses an hour without waiting for one). ``quiet``: symbols without trades (Binance pushes
    nothing for them; REST answers zero-volume candles at the last close); ``hour_volume``: a quote volume set
    for one (symbol, open time), for spikes; ``first_open``: a young listing's first hour."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.offset_ms = 0
        self.frozen_ms: int | None = None
        self.quiet: set[str] = set()
        self.hour_volume: dict[tuple[str, int], float] = {}
        #: symbol -> open time of its first hour (a listing younger than a day: REST answers fewer rows).
        self.first_open: dict[str, int] = {}
        self._base: dict[str, float] = {}

    def now_ms(self) -> int:
        if self.frozen_ms is not None:
            return self.frozen_ms
        return int(time.time() * 1000) + self.offset_ms

    @contextmanager
    def frozen(self) -> Iterator["Candles"]:
        """The open candles stop growing inside the block (the streams keep sending them): a REST read and a
        stream read a second apart agree, as two scans compared decision by decision need."""
        self.frozen_ms = self.now_ms()
        try:
            yield self
        finally:
            self.frozen_ms = None

    @staticmethod
    def _draw(symbol: str, hour: int, tag: str) -> float:
        """A number in [0, 1) fixed by its arguments (the same in every process, unlike ``hash``)."""
        return zlib.crc32(f"{symbol}|{hour}|{tag}".encode()) % 1000 / 1000

    def _level(self, symbol: str, hour: int) -> float:
        base = self._base.get(symbol)
        if base is None:  # the price level when first asked: closed hours must not follow the random walk
            contract = self.market.find(symbol)
            base = self._base[symbol] = contract.mark if contract is not None else 1.0
        return base * (1 + 0.002 * (self._draw(symbol, hour, "p") - 0.5))

    def row(self, symbol: str, open_ms: int, now_ms: int) -> list[Any]:
        """Binance's twelve-field row for the hour opening at ``open_ms``, as of ``now_ms``."""
        contract = self.market.find(symbol)
        hour = open_ms // HOUR_MS
        full = self.hour_volume.get((symbol, open_ms))
        if full is None:
            daily = contract.quote_volume if contract is not None else 1e6
            full = daily / 24 * (0.5 + self._draw(symbol, hour, "v"))
        share = min(max((now_ms - open_ms) / HOUR_MS, 0.0), 1.0)
        o = self._level(symbol, hour)
        c = self._level(symbol, hour + 1) if share >= 1.0 else o * (1 + 0.001 * share)
        quote = 0.0 if symbol in self.quiet else full * share
        if symbol in self.quiet:
            c = o
        trades = int(quote / 1000)
        base = quote / ((o + c) / 2)
        hi, lo = (max(o, c) * 1.0005, min(o, c) * 0.9995) if trades else (o, o)
        return [open_ms, fmt(o), fmt(hi), fmt(lo), fmt(c), f"{base:.3f}", open_ms + HOUR_MS - 1, f"{quote:.4f}",
                trades, f"{base / 2:.3f}", f"{quote / 2:.4f}", "0"]

    def message(self, symbol: str, open_ms: int, now_ms: int, closed: bool) -> str:
        """The ``<symbol>@kline_1h`` message for that hour (``"x"``: ``closed``), combined-stream wrapped."""
        r = self.row(symbol, open_ms, now_ms)
        k = {"t": r[0], "T": r[6], "s": symbol, "i": "1h", "f": 1, "L": 1 + r[8], "o": r[1], "c": r[4], "h": r[2],
             "l": r[3], "v": r[5], "n": r[8], "x": closed, "q": r[7], "V": r[9], "Q": r[10], "B": "0"}
        data = {"e": "kline", "E": now_ms, "s": symbol, "k": k}
        return json.dumps({"stream": f"{symbol.lower()}@kline_1h", "data": data}, ensure_ascii=False,
                          separators=(",", ":"))

    def ticker(self, c: Contract, now_ms: int) -> dict[str, Any]:
        """One ``24hrTicker`` event (Binance's field order); COIN-M rows carry ``"st":2``."""
        row = {"e": "24hrTicker", "E": now_ms, "s": c.symbol, "p": fmt(c.mark * 0.01), "P": "1.010",
               "w": fmt(c.mark * 0.995), "c": fmt(c.mark), "Q": "1.000", "o": fmt(c.mark * 0.99),
               "h": fmt(c.mark * 1.02), "l": fmt(c.mark * 0.98), "v": f"{c.quote_volume / c.mark:.3f}",
               "q": f"{c.quote_volume:.2f}", "O": now_ms - 86_400_000, "C": now_ms, "F": 1, "L": 1001, "n": 1000}
        if c.symbol_type != 1:
            row["st"] = c.symbol_type
        return row

    def tickers_frame(self, now_ms: int) -> str:
        with self.market._lock:
            rows = [self.ticker(c, now_ms) for c in (*self.market.contracts.values(),
                                                     *self.market.coin_m.values())]
        return json.dumps({"stream": "!ticker@arr", "data": rows}, ensure_ascii=False, separators=(",", ":"))
