"""The daemon's in-memory records: refreshed in place, yet equal to a record built afresh."""

from __future__ import annotations

from volspike_funding.binance.wire import parse_item
from volspike_funding.store import records


def item(event: int, price: str, **extra: object) -> dict[str, object]:
    return {"e": "markPriceUpdate", "E": event, "s": "BTCUSDT", "p": price, "i": "1.4", "r": "0.0001",
            "T": 9, **extra}


def test_a_refreshed_record_equals_one_built_afresh_and_keeps_its_key_order() -> None:
    symbols: dict = {}
    records.refresh(symbols, [parse_item(item(1, "1.5"))], 1.0, None, None, set())
    second = parse_item(item(2, "1.6", ap="1.55", st=1))
    result = records.refresh(symbols, [second], 2.0, None, None, set())
    assert result == records.Refreshed(1, 0, 0, 0)
    assert symbols["BTCUSDT"] == records.symbol_record(second, 2.0)
    assert list(symbols["BTCUSDT"]) == list(records.RECORD_KEYS)


def test_an_older_update_leaves_the_record_untouched() -> None:
    symbols: dict = {}
    records.refresh(symbols, [parse_item(item(5, "1.5"))], 1.0, None, None, set())
    before = dict(symbols["BTCUSDT"])
    assert records.refresh(symbols, [parse_item(item(4, "9"))], 2.0, None, None, set()).stale == 1
    assert symbols["BTCUSDT"] == before


def test_a_restored_record_is_copied_with_exactly_the_record_keys() -> None:
    read = {"symbol": "X", "markPrice": 1.5, "eventTime": 1, "updatedAt": 1.0, "extra": True}
    owned = records.own_record(read)
    assert owned is not read and list(owned) == list(records.RECORD_KEYS)
    assert owned["binance"] == "" and owned["nextFundingTime"] is None
    records.refresh({"X": owned}, [parse_item({"E": 2, "s": "X", "p": "2"})], 2.0, None, None, set())
    assert read["markPrice"] == 1.5  # the snapshot's record is not the daemon's
