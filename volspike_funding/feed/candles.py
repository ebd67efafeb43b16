"""The daemon's 1 h candles and 24 h tickers in memory: which copy wins, what is final, what must be backfilled.

Pure bookkeeping (times are passed in). A candle is *final* once Binance's ``"x":true`` message arrived or REST
returned it closed; a final candle is never replaced by a stream update. Per symbol the book keeps the open hour
and the ``KEEP_CLOSED`` closed hours before it (the volume script needs two; Binance clients ask for a few more).

Binance pushes a symbol's open candle only when it changed: an hour without trades has no message at all, and
neither has its close. So "no message" is not "stale" while the connection is alive; a closed hour that is not
final ``FINAL_GRACE_MS`` after its close (the final message comes ~2 s after it) is asked of REST instead.
"""

from __future__ import annotations

from typing import Iterable

from volspike_funding.binance.market_wire import INTERVAL_MS, Candle, Ticker

KEEP_CLOSED = 26
#: A closed hour not final this long after its close is backfilled (the ``x:true`` message takes ~2 s).
FINAL_GRACE_MS = 20_000


def hour_of(ms: int) -> int:
    return ms // INTERVAL_MS * INTERVAL_MS


class CandleBook:
    def __init__(self, keep_closed: int = KEEP_CLOSED) -> None:
        self.keep_closed = keep_closed
        #: symbol -> open time -> candle.
        self.candles: dict[str, dict[int, Candle]] = {}
        #: symbol -> its first hour on Binance, learnt from a REST answer shorter than asked (a listing younger
        #: than the kept window): the hours before it are not missing, they never were.
        self.first: dict[str, int] = {}
        self.counters = {"stream_updates": 0, "out_of_order": 0, "after_final": 0, "rest_candles": 0}

    def apply_stream(self, candle: Candle) -> bool:
        """A kline message's candle; ``False`` when an older or already final copy was kept."""
        held = self.candles.setdefault(candle.symbol, {})
        old = held.get(candle.open_time)
        if old is not None:
            if old.closed:
                self.counters["after_final"] += 1
                return False
            if old.event_time > candle.event_time:
                self.counters["out_of_order"] += 1
                return False
        held[candle.open_time] = candle
        self.counters["stream_updates"] += 1
        self._prune(held, candle.open_time)
        return True

    def apply_rest(self, symbol: str, candles: Iterable[Candle], asked: int | None = None) -> int:
        """REST's candles for ``symbol`` (closed ones are final), the newest ``asked`` Binance has. A stream copy
        newer than REST's open candle is kept: REST confirms what closed, the stream is fresher for what is open."""
        held = self.candles.setdefault(symbol, {})
        candles = list(candles)
        if asked is not None and 0 < len(candles) < asked:
            self.first[symbol] = min(c.open_time for c in candles)
        taken = newest = 0
        for candle in candles:
            newest = max(newest, candle.open_time)
            old = held.get(candle.open_time)
            if old is not None and (old.closed or (not candle.closed and old.event_time > 0)):
                continue
            held[candle.open_time] = candle
            taken += 1
        self.counters["rest_candles"] += taken
        if newest:
            self._prune(held, newest)
        return taken

    def _prune(self, held: dict[int, Candle], newest_open: int) -> None:
        cutoff = newest_open - self.keep_closed * INTERVAL_MS
        if len(held) > self.keep_closed + 1:
            for open_time in [t for t in held if t < cutoff]:
                del held[open_time]

    def drop(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self.candles.pop(symbol, None)
            self.first.pop(symbol, None)

    def missing(self, symbol: str, now_ms: int) -> list[int]:
        """Closed hours of the kept window that are not final although their final message is overdue."""
        held = self.candles.get(symbol, {})
        newest_closed = hour_of(now_ms - FINAL_GRACE_MS) - INTERVAL_MS
        oldest = max(hour_of(now_ms) - self.keep_closed * INTERVAL_MS, self.first.get(symbol, 0))
        return [t for t in range(oldest, newest_closed + 1, INTERVAL_MS)
                if not ((c := held.get(t)) is not None and c.closed)]

    def rows(self, symbol: str) -> list[Candle]:
        return [c for _, c in sorted(self.candles.get(symbol, {}).items())]


class TickerBook:
    """The newest 24 h ticker per symbol (``!ticker@arr`` sends only the ones that changed)."""

    def __init__(self) -> None:
        self.tickers: dict[str, Ticker] = {}

    def apply(self, tickers: Iterable[Ticker]) -> int:
        held, taken = self.tickers, 0
        for ticker in tickers:
            old = held.get(ticker.symbol)
            if old is None or old.event_time <= ticker.event_time:
                held[ticker.symbol] = ticker
                taken += 1
        return taken

    def drop(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self.tickers.pop(symbol, None)
