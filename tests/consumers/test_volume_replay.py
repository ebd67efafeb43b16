"""A replayed day (issue 21's proof): the volume script's alert decisions from the market feed's candles are those
from REST, slot by slot, across 24 hour boundaries, with spikes, half and full updates.

The kline messages are the fake exchange's (``Candles.message``: Binance's wire, the final ``"x":true`` 2 s after
each close, none for a symbol without trades, none dropped for one symbol) replayed through the real parser
(``parse_market_message``) into the real book (``CandleBook``, with REST backfill where it says something is
missing, ``FINAL_GRACE_MS`` after a close), served through the batch route's own selection (``market_routes.batch``,
over the market file's JSON) and judged by the volume script's rules and alert book. REST's rows are the same
fake's (``Candles.row``, what ``FakeBinanceRest`` answers) at the scan's moment. Sockets and processes are not part
of this test (``test_volume_klines.py`` runs them); a day of them would take a day.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from volspike_funding.api.market_routes import batch
from volspike_funding.binance.market_wire import candle_from_rest, parse_market_message
from volspike_funding.consumers.volume_rules import (FULL_UPDATE, HALF_UPDATE, SPIKE, AlertBook, is_spike,
                                                     klines_limit, pick_candles)
from volspike_funding.fake.market import HOUR_MS, Market
from volspike_funding.feed.candles import FINAL_GRACE_MS, CandleBook
from volspike_funding.store.marketfile import MarketSnapshot

START = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)
MINUTE = 60_000


class Day:
    def __init__(self) -> None:
        self.market = Market(24)
        self.candles = self.market.candles
        self.symbols = self.market.usdt_perpetuals()
        self.quiet, self.no_final = self.symbols[-1], self.symbols[-2]
        self.candles.quiet.add(self.quiet)
        self.book = CandleBook()
        self.rest_calls = 0

    def rest(self, symbol: str, limit: int, now: int) -> list[list[Any]]:
        """What REST ``klines`` answers at ``now`` (``FakeBinanceRest``'s rows)."""
        self.rest_calls += 1
        open_hour = now // HOUR_MS * HOUR_MS
        return [self.candles.row(symbol, open_hour - k * HOUR_MS, now) for k in range(limit - 1, -1, -1)]

    def backfill(self, symbol: str, now: int) -> None:
        rows = self.rest(symbol, 27, now)
        self.book.apply_rest(symbol, [candle_from_rest(symbol, r, now) for r in rows], asked=27)

    def stream(self, symbol: str, open_ms: int, now: int, closed: bool) -> None:
        if symbol == self.quiet or (closed and symbol == self.no_final):
            return  # Binance pushes nothing for an hour without trades; one final lost on the way
        for candle in parse_market_message(self.candles.message(symbol, open_ms, now, closed)).candles:
            self.book.apply_stream(candle)

    def served(self, limit: int, now: int) -> tuple[dict[str, list[list[Any]]], dict[str, str]]:
        """The batch's answer at ``now``, through the market file's JSON as the API reads it."""
        klines = {s: {"since": (START - HOUR_MS) / 1000, "rows": [c.rest_row() for c in self.book.rows(s)],
                      "final": [c.closed for c in self.book.rows(s)], "firstOpen": self.book.first.get(s)}
                  for s in self.symbols}
        document = orjson.loads(orjson.dumps({"schemaVersion": 1, "connected": True, "lastFrameAt": now / 1000,
                                              "klines": klines}))
        return batch(MarketSnapshot(document), limit, now)


def judge(book: AlertBook, rows: dict[str, list[list[Any]]], slot: datetime) -> list[tuple[str, str]]:
    decided = []
    for symbol, symbol_rows in sorted(rows.items()):
        candles = pick_candles(symbol_rows, slot)
        if candles is None:
            continue
        kind = book.decide(symbol, candles, slot, is_spike(candles, 3.0, 3e6))
        if kind is not None:
            book.record(symbol, candles, slot, kind)
            decided.append((symbol, kind))
    return decided


def test_a_replayed_day_decides_from_the_feed_exactly_as_from_rest(tmp_path: Path) -> None:
    day = Day()
    s = day.symbols
    # Spikes: early in an hour (half and full updates follow), late in one, one hour after another, a quiet symbol
    # too small to count; prev/curr quote volumes of (symbol, hour).
    for symbol, hour, prev, curr in [(s[0], 3, 4e6, 40e6), (s[1], 7, 4e6, 13e6), (s[2], 11, 2e6, 9e6),
                                     (s[2], 12, 9e6, 80e6), (s[3], 23, 5e6, 60e6), (day.no_final, 15, 3e6, 30e6)]:
        day.candles.hour_volume[(symbol, START + (hour - 1) * HOUR_MS)] = prev
        day.candles.hour_volume[(symbol, START + hour * HOUR_MS)] = curr
    for symbol in s:
        day.backfill(symbol, START)
    rest_book, ws_book = AlertBook(tmp_path / "rest.json"), AlertBook(tmp_path / "ws.json")
    differences, fallbacks, decisions = [], 0, []
    for minute in range(24 * 60 + 1):
        t = START + minute * MINUTE
        if t % HOUR_MS == 0 and t > START:
            for symbol in s:
                day.stream(symbol, t - HOUR_MS, t + 2000, closed=True)  # ~2 s after the close
        slot = datetime.fromtimestamp(t / 1000, timezone.utc)
        if minute % 5 == 0:
            now = t + (3000 if slot.minute == 0 else 500)  # the :00 scan waited for the finals
            for symbol in s:
                day.stream(symbol, now // HOUR_MS * HOUR_MS, now, closed=False)  # the push before the scan
            limit = klines_limit(slot)
            answered, unavailable = day.served(limit, now)
            rest_rows = {symbol: day.rest(symbol, limit, now) for symbol in s}
            ws_rows = {symbol: answered.get(symbol) or day.rest(symbol, limit, now) for symbol in s}
            fallbacks += len(s) - len(answered)
            got_rest, got_ws = judge(rest_book, rest_rows, slot), judge(ws_book, ws_rows, slot)
            decisions += got_rest
            if got_ws != got_rest:
                differences.append((slot.isoformat(), got_rest, got_ws, unavailable))
        for symbol in s:  # the market feed's backfill plan (every 5 s; here every minute, 20 s past the close)
            now = t + FINAL_GRACE_MS + 5000
            if day.book.missing(symbol, now):
                day.backfill(symbol, now)
    assert differences == []
    kinds = [k for _, k in decisions]
    assert kinds.count(SPIKE) >= 5 and HALF_UPDATE in kinds and FULL_UPDATE in kinds, decisions
    assert (day.no_final, SPIKE) in decisions  # a lost final: REST's copy decided, the same
    # Only the :00 scans of the quiet symbol and of the one whose final was lost went to REST (24 each).
    assert fallbacks == 2 * 24
