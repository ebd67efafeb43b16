"""The candle book's decisions and the klines route's selection, with made-up times (pure code, no sockets)."""

from __future__ import annotations

from volspike_funding.api.market_routes import contiguous, select
from volspike_funding.binance.market_wire import Candle
from volspike_funding.feed.candles import FINAL_GRACE_MS, CandleBook, TickerBook
from volspike_funding.store.marketfile import MarketSnapshot

H = 3_600_000
T0 = 1_796_306_400_000


def candle(open_time: int, *, closed: bool = False, event: int = 1, volume: str = "10") -> Candle:
    return Candle("BTCUSDT", open_time, open_time + H - 1, "1", "2", "0.5", "1.5", volume, volume, 3, "1", "1",
                  closed, event)


def test_a_final_candle_is_never_replaced_and_older_updates_lose() -> None:
    book = CandleBook()
    assert book.apply_stream(candle(T0, event=5))
    assert not book.apply_stream(candle(T0, event=4))  # out of order
    assert book.apply_stream(candle(T0, closed=True, event=6, volume="11"))
    assert not book.apply_stream(candle(T0, event=7, volume="99"))
    assert book.rows("BTCUSDT")[0].volume == "11" and book.counters["after_final"] == 1


def test_rest_confirms_what_closed_but_never_replaces_a_fresher_open_candle() -> None:
    book = CandleBook()
    book.apply_stream(candle(T0 - H, event=5))  # closed, its final message lost
    book.apply_stream(candle(T0, event=9, volume="20"))
    taken = book.apply_rest("BTCUSDT", [candle(T0 - H, closed=True, event=0, volume="12"),
                                        candle(T0, event=0, volume="15")])
    rows = book.rows("BTCUSDT")
    assert taken == 1 and rows[0].closed and rows[0].volume == "12" and rows[1].volume == "20"


def test_missing_hours_wait_for_the_final_message_then_ask_rest() -> None:
    book = CandleBook(keep_closed=3)
    for k in range(1, 4):
        book.apply_stream(candle(T0 - k * H, closed=True))
    assert book.missing("BTCUSDT", T0 + 1000) == []
    book.apply_stream(candle(T0))  # the hour closes; its final message is due ~2 s later
    assert book.missing("BTCUSDT", T0 + H + 2000) == []
    assert book.missing("BTCUSDT", T0 + H + FINAL_GRACE_MS + 1) == [T0]
    assert book.missing("ETHUSDT", T0 + 1000) == [T0 - 3 * H, T0 - 2 * H]  # T0 - H closed 1 s ago: not yet
    assert book.missing("ETHUSDT", T0 + FINAL_GRACE_MS + 1) == [T0 - 3 * H, T0 - 2 * H, T0 - H]


def test_the_book_keeps_a_bounded_window() -> None:
    book = CandleBook(keep_closed=3)
    for k in range(50):
        book.apply_stream(candle(T0 + k * H, closed=True))
    assert len(book.rows("BTCUSDT")) == 4


def test_tickers_keep_the_newest() -> None:
    from volspike_funding.binance.market_wire import Ticker
    book = TickerBook()
    t = Ticker("BTCUSDT", "1", "1", "1", "1", "1", "1", "1", "1", "1", "1", 0, 1, 0, 1, 1, event_time=5)
    assert book.apply([t]) == 1 and book.apply([Ticker(*[getattr(t, f) for f in t.__struct_fields__][:-1],
                                                       event_time=4)]) == 0


def rows(first: int, n: int) -> list[list[object]]:
    return [candle(first + k * H, closed=True).rest_row() for k in range(n)]


def test_select_answers_whole_or_says_what_is_kept() -> None:
    held = rows(T0 - 26 * H, 27)  # 26 closed + the open one
    now = T0 + 60_000
    assert [r[0] for r in select(held, 2, None, None, now)] == [T0 - H, T0]  # type: ignore[union-attr]
    assert len(select(held, 27, None, None, now)) == 27
    assert "only the last 27" in select(held, 28, None, None, now)  # type: ignore[operator]
    assert [r[0] for r in select(held, 2, T0 - 3 * H + 1, None, now)] == [T0 - 2 * H, T0 - H]  # type: ignore[union-attr]
    assert [r[0] for r in select(held, 5, None, T0 - 5 * H, now)][-1] == T0 - 5 * H  # type: ignore[index]
    assert isinstance(select(held, 5, T0 - 40 * H, None, now), str)


def test_an_hour_without_trades_is_binances_zero_candle_only_while_subscribed_before_it() -> None:
    held = rows(T0 - 3 * H, 3)  # closed hours, nothing yet for the open hour T0
    snap = MarketSnapshot({})
    whole = contiguous({"rows": held, "since": (T0 - 10 * H) / 1000}, snap, T0 + 600_000)
    assert isinstance(whole, list) and whole[-1][0] == T0 and whole[-1][5] == "0" and whole[-1][4] == held[-1][4]
    assert isinstance(contiguous({"rows": held, "since": (T0 + 1000) / 1000}, snap, T0 + 600_000), str)
    assert isinstance(contiguous({"rows": held, "since": None}, snap, T0 + 600_000), str)
    holed = held[:1] + held[2:]
    assert [r[0] for r in contiguous({"rows": holed, "since": 0}, snap, T0 + 1)][0] == T0 - H  # type: ignore[index]
