"""The daemon's in-memory state on its own (feed/state.py): updates, the event-time rules, the clock skew, listing
and age drops, restore, and the document it hands the writer. Frames come from the fake market through the real
parser; times are made up, so nothing here waits."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from volspike_funding.binance.wire import MarkPrice, ParsedFrame, parse_frame
from volspike_funding.fake.market import Market
from volspike_funding.feed.state import ClockSkew, FundingStore
from volspike_funding.store import statefile
from volspike_funding.store.daemon_status import DaemonStatus
from volspike_funding.store.reference import ReferenceData

NOW = 1_791_382_993.0
NOW_MS = int(NOW * 1000)
URL = "wss://fstream.binance.com/market/stream?streams=!markPrice@arr@1s"


def updates(event_ms: int, market: Market | None = None) -> list[MarkPrice]:
    parsed = parse_frame((market or Market(20)).frame(event_ms), event_ms, 300_000)
    assert parsed.all_market and not parsed.defects
    return parsed.updates


def one(symbol: str, event_ms: int) -> MarkPrice:
    return next(u for u in updates(event_ms) if u.symbol == symbol)


def new_store() -> FundingStore:
    return FundingStore(URL, started_at=NOW - 60, heartbeat_s=5.0)


def test_updates_are_stored_counted_and_date_the_data() -> None:
    store = new_store()
    assert store.data_age(NOW) is None  # no data yet: unknown, not 0 s old
    batch = updates(NOW_MS)
    assert store.apply(batch, NOW) == len(batch) == 20
    assert store.counters["updates"] == 20 and store.newest_update == NOW
    assert store.data_age(NOW + 2.5) == 2.5 and store.data_age(NOW - 1) == 0.0
    btc = store.symbols["BTCUSDT"]
    assert btc["eventTime"] == NOW_MS and btc["updatedAt"] == NOW and btc["markPrice"] > 0


def test_an_older_event_time_never_replaces_a_newer_one() -> None:
    store = new_store()
    store.apply([one("BTCUSDT", NOW_MS)], NOW)
    assert store.apply([one("BTCUSDT", NOW_MS - 1)], NOW + 1) == 0
    assert store.symbols["BTCUSDT"]["eventTime"] == NOW_MS and store.counters["out_of_order"] == 1
    assert store.newest_update == NOW  # a skipped update does not make the data look fresher
    assert store.apply([one("BTCUSDT", NOW_MS)], NOW + 1) == 1  # the same time again is not older


def test_a_stored_time_from_the_future_does_not_block_true_updates() -> None:
    store = new_store()
    store.apply([one("BTCUSDT", NOW_MS + 3_600_000)], NOW)  # an hour ahead, within the parser's skew limit
    # Binance's clock (now + slack) is before the stored time: the stored one cannot be true, the newer frame wins.
    assert store.apply([one("BTCUSDT", NOW_MS + 1000)], NOW + 1, future_after_ms=NOW_MS + 6000) == 1
    assert store.counters["future_overridden"] == 1 and store.symbols["BTCUSDT"]["eventTime"] == NOW_MS + 1000
    # Without that bound (no measured clock), an older time is refused as before.
    store.apply([one("ETHUSDT", NOW_MS + 5000)], NOW)
    assert store.apply([one("ETHUSDT", NOW_MS)], NOW, future_after_ms=NOW_MS + 5000) == 0


def test_implausible_event_times_never_reach_the_state() -> None:
    frame = Market(20).frame(NOW_MS + 3_600_000 * 24 * 365 * 100)  # a century ahead
    parsed = parse_frame(frame, NOW_MS, 300_000)
    assert not parsed.updates and parsed.defects


def test_clock_skew_is_the_median_so_one_odd_frame_cannot_move_it() -> None:
    skew = ClockSkew(size=5)
    assert skew.status() == {"skewMs": None, "samples": 0}  # unknown, not 0
    for event, received in ((1000, 1100), (2000, 2090), (3000, 3110), (4000, 3_604_000), (5000, 5100)):
        skew.add(event, received)
    assert skew.skew_ms == -100 and skew.status() == {"skewMs": -100, "samples": 5}
    for i in range(5):
        skew.add(10_000 + i, 10_000 + i + 50)
    assert skew.skew_ms == -50  # the window forgets old samples


def test_unlisted_symbols_are_counted_not_stored_and_a_listing_drops_the_gone() -> None:
    market = Market(20)
    store = new_store()
    store.apply(updates(NOW_MS, market), NOW)
    listed = [market.exchange_symbol(c) for name, c in market.listed().items() if name != "SOLUSDT"]
    gone = store.set_reference(ReferenceData(exchange_info=orjson.dumps({"symbols": listed})))
    assert gone == ["SOLUSDT"] and "SOLUSDT" not in store.symbols and store.counters["dropped_symbols"] == 1
    assert store.apply(updates(NOW_MS + 1000, market), NOW + 1) == 19
    assert store.counters["unlisted"] == 1 and store.unlisted_seen == {"SOLUSDT"}
    # Unknown reference data (a failed first fetch) decides nothing: everything is stored.
    assert store.set_reference(ReferenceData()) == [] and store.unlisted_seen == set()
    assert store.apply(updates(NOW_MS + 2000, market), NOW + 2) == 20


def test_symbols_unseen_for_the_drop_age_are_forgotten() -> None:
    store = new_store()
    store.apply(updates(NOW_MS), NOW)
    store.apply([one("BTCUSDT", NOW_MS + 1000)], NOW + 100)
    assert store.drop_unseen(NOW + 100, 100) == []  # exactly the age: kept
    gone = store.drop_unseen(NOW + 100.5, 100)
    assert len(gone) == 19 and list(store.symbols) == ["BTCUSDT"] and store.counters["dropped_symbols"] == 19


def test_restore_keeps_true_ages_and_rejects_future_and_malformed_records(tmp_path: Path) -> None:
    old = new_store()
    old.apply(updates(NOW_MS - 30_000), NOW - 30)
    doc = old.document(NOW - 29)
    doc["funding_state"]["BTCUSDT"]["eventTime"] = NOW_MS + 3_600_000  # poisoned by a future frame
    doc["funding_state"]["ETHUSDT"]["markPrice"] = "not a number"
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    store = new_store()
    store.restore_previous(tmp_path / "absent-reference.json", path, 300, now=NOW)
    assert len(store.symbols) == 18 and not {"BTCUSDT", "ETHUSDT"} & set(store.symbols)
    assert store.symbols["SOLUSDT"]["updatedAt"] == NOW - 30  # its true age, not re-stamped
    assert store.newest_update is None  # nothing was received by this run
    missing = new_store()
    missing.restore_previous(tmp_path / "absent-reference.json", tmp_path / "absent.json", 300, now=NOW)
    assert missing.symbols == {}


def test_the_document_is_what_the_reader_reads(tmp_path: Path) -> None:
    store = new_store()
    store.apply(updates(NOW_MS), NOW)
    store.count_malformed("bad_price", 2)
    store.note_parsed(ParsedFrame([], [("bad_price", "x")], 1, {"coin_m": 2}, True))
    store.note_parsed(ParsedFrame([], [], 0, {"coin_m": 1}, True))
    store.note_frame(NOW)
    store.note_connected(NOW - 5)
    doc = store.document(NOW + 1, clock={"skewMs": None, "samples": 0})
    assert doc["updated_at"] == NOW + 1 and doc["counters"]["malformed"] == {"bad_price": 3}
    assert doc["counters"]["other_kinds"] == {"coin_m": 3} and doc["connection_status"]["url"] == URL
    assert doc["counters"]["ignored"] == 1 and doc["counters"]["frames"] == 1
    status = DaemonStatus.of(doc)  # what readers will make of it
    assert status.connected and status.last_connected_time == NOW - 5 and status.messages_received == 1
    store.note_disconnected(NOW + 2, "watchdog", reconnecting=True)
    status = DaemonStatus.of(store.document(NOW + 3))
    assert not status.connected and status.last_error == "watchdog" and status.reconnect_attempts == 1
    assert store.connection["last_disconnected_time"] == NOW + 2
    path = tmp_path / "state.json"
    path.write_bytes(orjson.dumps(doc))
    snapshot = statefile.read_state(path)
    assert set(snapshot.raw) == set(store.symbols)


def test_the_clock_offset_needs_three_agreeing_frames_and_one_poisoned_frame_cannot_move_it() -> None:
    """Issue 20.2: a host 10 minutes off used to reject every item for ever."""
    skew = ClockSkew()
    skew.add(NOW_MS - 600_000, NOW_MS)
    skew.add(NOW_MS - 600_000, NOW_MS + 1000)
    assert skew.skew_ms == -600_500 and skew.offset_ms == 0  # two frames are not a clock yet
    skew.add(NOW_MS - 599_000, NOW_MS + 2000)
    assert skew.offset_ms == skew.skew_ms == -601_000
    skew.add(NOW_MS + 3_600_000, NOW_MS + 3000)  # one frame an hour ahead
    assert abs(skew.offset_ms + 601_000) <= 1000


def test_a_listing_that_names_few_of_the_symbols_the_stream_carries_is_doubted() -> None:
    """Issue 20.5: a truncated first exchangeInfo once unlisted 600 symbols for 15 minutes."""
    carried = [f"S{i}USDT" for i in range(60)]
    listing = ReferenceData(orjson.dumps({"symbols": [{"symbol": s, "status": "TRADING"} for s in carried[:10]]}))
    doubt = FundingStore.listing_doubt(listing, carried)
    assert doubt == "exchangeInfo lists 10 of the 60 symbols the stream carries; not believed"
    assert FundingStore.listing_doubt(listing, carried[:19]) is None  # too little evidence to contradict
    assert FundingStore.listing_doubt(listing, carried[:20]) is None  # half of 20 listed: believed
    assert FundingStore.listing_doubt(ReferenceData(), carried) is None  # nothing listed: nothing to doubt
