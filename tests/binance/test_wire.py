"""The pure frame parser, fed recorded-shape Binance traffic and every kind of defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from volspike_funding.core.errors import FrameError
from volspike_funding.binance.wire import parse_frame, parse_item

FRAMES = (Path(__file__).parent.parent / "data" / "markprice_frames.jsonl").read_text(encoding="utf-8").splitlines()


def test_recorded_combined_frame_keeps_strings_and_numbers() -> None:
    parsed = parse_frame(FRAMES[0].encode())
    assert parsed.defects == [] and parsed.ignored == 0
    btc, delivery, non_ascii = parsed.updates
    assert btc.symbol == "BTCUSDT" and btc.mark_price == 11794.15 and btc.mark_price_str == "11794.15000000"
    assert btc.funding_rate == 0.00038167 and btc.funding_rate_str == "0.00038167"
    assert btc.next_funding_time == 1562306400000 and btc.event_time == 1562305380000
    assert btc.index_price_str == "11784.62659091" and btc.settle_price_str == "11784.25641265"


def test_delivery_contract_has_no_funding_rather_than_zero() -> None:
    delivery = parse_frame(FRAMES[0]).updates[1]
    assert delivery.funding_rate is None and delivery.funding_rate_str is None
    assert delivery.next_funding_time is None


def test_non_ascii_symbol_is_kept_exactly() -> None:
    assert parse_frame(FRAMES[0]).updates[2].symbol == "币安人生USDT"
    assert parse_frame(FRAMES[0]).updates[2].funding_rate == -0.00087441


def test_raw_array_and_single_object_are_accepted() -> None:
    assert [u.symbol for u in parse_frame(FRAMES[1]).updates] == ["ETHUSDT"]
    assert [u.symbol for u in parse_frame(FRAMES[2]).updates] == ["SOLUSDT"]


@pytest.mark.parametrize("frame", [FRAMES[3], FRAMES[4]])
def test_other_streams_and_replies_are_ignored_and_counted(frame: str) -> None:
    parsed = parse_frame(frame)
    assert parsed.updates == [] and parsed.ignored == 1 and parsed.defects == []


def test_other_event_type_inside_array_is_ignored() -> None:
    frame = json.dumps([{"e": "kline", "s": "BTCUSDT"}, json.loads(FRAMES[2])])
    parsed = parse_frame(frame)
    assert parsed.ignored == 1 and len(parsed.updates) == 1


@pytest.mark.parametrize("raw, kind", [(b"\xff\xfe", "bad_json"), ("not json", "bad_json"), ("{", "bad_json"),
                                       ("42", "bad_shape"), ('"x"', "bad_shape"),
                                       ('{"stream": "!markPrice@arr@1s", "data": 7}', "bad_shape")])
def test_malformed_frames_raise_a_labelled_error(raw: str | bytes, kind: str) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.kind == kind


GOOD = {"e": "markPriceUpdate", "E": 1, "s": "X", "p": "1.5", "i": "1.4", "P": "1.45", "r": "0.0001", "T": 2}


@pytest.mark.parametrize("change, kind", [
    ({"s": None}, "missing_symbol"), ({"s": ""}, "missing_symbol"), ({"s": 5}, "missing_symbol"),
    ({"p": "abc"}, "bad_price"), ({"p": "nan"}, "bad_price"), ({"p": "inf"}, "bad_price"), ({"p": "0"}, "bad_price"),
    ({"p": "-1"}, "bad_price"), ({"p": None}, "bad_price"), ({"p": 1.5}, "bad_price"), ({"i": "x"}, "bad_price"),
    ({"r": "1e999"}, "bad_price"), ({"E": "1"}, "bad_time"), ({"E": None}, "bad_time"), ({"T": -1}, "bad_time"),
    ({"ap": 1.5}, "bad_price"), ({"ap": "x|1"}, "bad_price"), ({"ap": "nan"}, "bad_price"),
    ({"st": True}, "bad_symbol_type"), ({"st": "1"}, "bad_symbol_type"), ({"st": 1.0}, "bad_symbol_type"),
])
def test_each_item_defect_is_named(change: dict, kind: str) -> None:
    item = {**GOOD, **change}
    with pytest.raises(FrameError) as info:
        parse_item(item)
    assert info.value.kind == kind
    parsed = parse_frame(json.dumps([item, GOOD]))
    assert [u.symbol for u in parsed.updates] == ["X"] and parsed.defects[0][0] == kind


def test_missing_optional_prices_are_unknown_not_zero() -> None:
    update = parse_item({"E": 1, "s": "X", "p": "2"})
    assert update.index_price is None and update.settle_price is None
    assert update.funding_rate is None and update.next_funding_time is None


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                                  ["e", "E", "s", "p", "i", "P", "r", "T", "stream", "data"]), c, max_size=9),
                              max_leaves=20).map(lambda v: json.dumps(v))))
def test_no_input_escapes_as_anything_but_frame_error(raw: str | bytes) -> None:
    try:
        parsed = parse_frame(raw)
    except FrameError:
        return
    for update in parsed.updates:
        assert update.mark_price > 0 and update.symbol


def test_a_frame_reports_its_event_time_even_when_every_item_is_rejected() -> None:
    """The clock-skew sample (issue 20.2): a host 10 minutes off must still learn Binance's clock from the frames
    it rejects."""
    item = {"e": "markPriceUpdate", "E": 1_791_382_993_000, "s": "BTCUSDT", "p": "97000.10000000",
            "i": "97001.00000000", "P": "97000.50000000", "r": "0.00010000", "T": 1_791_388_800_000}
    frame = json.dumps({"stream": "!markPrice@arr@1s", "data": [item]})
    parsed = parse_frame(frame, 1_791_382_993_000 + 600_000, 300_000)
    assert parsed.updates == [] and parsed.defects[0][0] == "implausible_time"
    assert parsed.event_ms == 1_791_382_993_000 and parsed.all_market
    assert parse_frame(frame, 1_791_382_993_000 + 600_000 - 600_000, 300_000).updates[0].symbol == "BTCUSDT"
    assert parse_frame(json.dumps({"result": None, "id": 1})).event_ms is None


def test_ap_and_st_are_kept_as_sent_and_none_when_not_sent() -> None:
    """The local WebSocket re-emits rows exactly as Binance sent them, ``ap`` and ``st`` included."""
    row = {**GOOD, "ap": "1.50010000", "st": 1}
    sent = parse_item(row)
    assert (sent.mark_average_str, sent.symbol_type) == ("1.50010000", 1)
    assert (parse_item(GOOD).mark_average_str, parse_item(GOOD).symbol_type) == (None, None)
    frame = json.dumps({"stream": "!markPrice@arr@1s", "data": [row, {**GOOD, "s": "Y"}]})
    first, second = parse_frame(frame).updates
    assert (first.mark_average_str, first.symbol_type, second.mark_average_str, second.symbol_type) == (
        "1.50010000", 1, None, None)
