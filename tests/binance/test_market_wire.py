"""Kline and ticker messages through the real parser: Binance's documented examples, the fake's messages, and
every rule (a bad item is a named defect, never a crash, never a stored candle)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from volspike_funding.binance.market_wire import candle_from_rest, parse_market_message
from volspike_funding.core.errors import FrameError
from volspike_funding.fake.market import Market

from .test_recorded import docs

HOUR = 3_600_000
T0 = 1_796_306_400_000  # an hour's open


def kline(**k: Any) -> str:
    body = {"t": T0, "T": T0 + HOUR - 1, "s": "BTCUSDT", "i": "1h", "f": 1, "L": 9, "o": "100.5", "c": "101",
            "h": "102", "l": "99", "v": "10", "n": 8, "x": False, "q": "1005.5", "V": "5", "Q": "502", "B": "0"}
    body.update(k)
    return json.dumps({"stream": "btcusdt@kline_1h", "data": {"e": "kline", "E": T0 + 5, "s": "BTCUSDT", "k": body}})


def test_the_documented_kline_shape_parses_and_other_intervals_are_not_kept() -> None:
    raw, = docs("kline_doc_example")
    message = parse_market_message(json.dumps({"stream": "btcusd_200626@kline_1m", "data": json.loads(raw)}))
    assert message.candles == [] and message.defects[0][0] == "bad_kline" and "1m" in message.defects[0][1]
    one_hour = json.loads(raw)
    one_hour["k"].update(i="1h", t=T0, T=T0 + HOUR - 1)
    candle, = parse_market_message(json.dumps({"stream": "x@kline_1h", "data": one_hour})).candles
    assert (candle.symbol, candle.open, candle.quote_volume, candle.trades, candle.closed) == \
        ("BTCUSD_200626", "9638.9", "1.61836886", 31, False)
    assert candle.rest_row() == [T0, "9638.9", "9639.8", "9638.6", "9639.8", "156", T0 + HOUR - 1, "1.61836886",
                                 31, "73", "0.75731156", "0"]


def test_the_documented_ticker_is_kept_in_rests_shape_and_coin_m_rows_are_counted() -> None:
    raw, = docs("ticker_doc_example")
    row = json.loads(raw)
    frame = json.dumps({"stream": "!ticker@arr", "data": [row, {**row, "s": "BTCUSD_PERP", "st": 2}]})
    message = parse_market_message(frame)
    assert message.all_tickers and message.other_kinds == {"coin_m": 1} and len(message.tickers) == 1
    rest = message.tickers[0].rest()
    assert rest["priceChangePercent"] == "250.00" and rest["count"] == 18151 and rest["quoteVolume"] == "18"


@pytest.mark.parametrize("change,why", [
    ({"o": "-1"}, "price"), ({"o": "nan"}, "price"), ({"q": "x"}, "volume"), ({"n": -1}, "volume"),
    ({"T": T0 + HOUR}, "open/close"), ({"t": T0 + 1, "T": T0 + HOUR}, "open/close"), ({"l": "103"}, "low"),
    ({"s": "ETHUSDT"}, "symbol"), ({"s": "BAD/SYM"}, "symbol")])
def test_a_bad_kline_is_a_named_defect(change: dict[str, Any], why: str) -> None:
    message = parse_market_message(kline(**change))
    assert message.candles == [] and message.defects[0][0] == "bad_kline" and why in message.defects[0][1]


@pytest.mark.parametrize("raw,kind", [("not json", "not_json"), ('{"a": 1}', "unexpected_payload"),
                                      ('{"stream": "!ticker@arr", "data": {}}', "bad_ticker_frame")])
def test_garbage_is_a_frame_error(raw: str, kind: str) -> None:
    with pytest.raises(FrameError) as exc:
        parse_market_message(raw)
    assert exc.value.kind == kind


def test_replies_and_types_that_do_not_fit_never_crash() -> None:
    assert parse_market_message('{"result": null, "id": 4}').reply == (4, None)
    assert parse_market_message(kline(o=1.5)).defects[0][0] == "bad_kline"  # a number where Binance sends text
    assert parse_market_message('{"stream": "btcusdt@depth", "data": {}}')[:4] == ([], [], [], {})


def test_the_fakes_messages_and_rest_rows_agree() -> None:
    market = Market(20)
    candles = market.candles
    now = T0 + 1_800_000
    for symbol in ("BTCUSDT", "币安人生USDT"):
        closed = parse_market_message(candles.message(symbol, T0 - HOUR, now, True)).candles[0]
        assert closed.closed and closed.rest_row() == candles.row(symbol, T0 - HOUR, now)
        assert candle_from_rest(symbol, candles.row(symbol, T0 - HOUR, now), now).closed
    with pytest.raises(FrameError):
        candle_from_rest("BTCUSDT", [T0, "1"], now)
