"""Verbatim Binance traffic (tests/data/PROVENANCE.md) replayed through the real parsers: the wire parser for
WebSocket frames, the REST client (against a loopback server) for error bodies.

The fixtures keep Binance's original event times ``E`` (2019-2026); the parser rightly rejects an event time far
from the local clock, so each test re-stamps ``E`` in the frame's own text before replaying it at today's clock.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from volspike_funding.binance.rest import BinanceRest
from volspike_funding.binance.wire import parse_frame
from volspike_funding.core.errors import FrameError, RequestRejected
from volspike_funding.fake.http_fake import HttpFake

DATA = Path(__file__).parent.parent / "data"
DOCS: list[dict[str, Any]] = [json.loads(line)
                              for line in (DATA / "binance_docs.jsonl").read_text("utf-8").splitlines()]
#: Lines 1-3 of markprice_2026.jsonl are byte-for-byte captures (line 4 is constructed; see PROVENANCE.md).
CAPTURED_2026 = (DATA / "markprice_2026.jsonl").read_text("utf-8").splitlines()[:3]
SKEW_MS = 60_000  # a minute either side of the local clock is plausible, as in the daemon


def docs(*kinds: str) -> list[str]:
    return [d["raw"] for d in DOCS if d["kind"] in kinds]


def restamped(raw: str, now_ms: int) -> str:
    """The same frame text with every event time ``E`` replaced by ``now_ms`` (nothing else touched)."""
    text, count = re.subn(r'"E":\s*\d+', f'"E":{now_ms}', raw)
    assert count >= 1, raw
    return text


def test_every_fixture_line_names_its_source_and_kind() -> None:
    kinds = {"subscribe_reply", "unsubscribe_reply", "list_subscriptions_reply", "set_property_reply",
             "get_property_reply", "ws_error", "mark_price_legacy", "mark_price_legacy_delivery",
             "mark_price_all_market_as_published", "rest_error", "kline_doc_example", "ticker_doc_example"}
    assert DOCS and all(d["kind"] in kinds and d["source"] and d["raw"] for d in DOCS)
    provenance = (DATA / "PROVENANCE.md").read_text("utf-8")
    assert "binance_docs.jsonl" in provenance and all(d["source"].split()[0] in provenance for d in DOCS)


@pytest.mark.parametrize("raw", docs("subscribe_reply", "unsubscribe_reply", "list_subscriptions_reply",
                                     "set_property_reply", "get_property_reply", "ws_error"))
def test_control_replies_and_error_frames_are_ignored_not_data_nor_defects(raw: str) -> None:
    parsed = parse_frame(raw, int(time.time() * 1000), SKEW_MS)
    assert parsed.updates == [] and parsed.defects == [] and parsed.ignored == 1 and parsed.other_kinds == {}


def test_the_documented_legacy_update_keeps_binances_strings_once_restamped() -> None:
    raw, = docs("mark_price_legacy")
    now_ms = int(time.time() * 1000)
    as_recorded = parse_frame(raw, now_ms, SKEW_MS)  # E is from 2019: far from any clock today
    assert as_recorded.updates == [] and [kind for kind, _ in as_recorded.defects] == ["implausible_time"]
    btc, = parse_frame(restamped(raw, now_ms), now_ms, SKEW_MS).updates
    assert (btc.symbol, btc.event_time, btc.mark_price_str, btc.index_price_str, btc.settle_price_str,
            btc.funding_rate_str) == ("BTCUSDT", now_ms, "11794.15000000", "11784.62659091", "11784.25641265",
                                      "0.00038167")
    assert btc.funding_rate == 0.00038167 and btc.next_funding_time == 1562306400000


def test_a_documented_delivery_contract_has_unknown_funding_not_zero() -> None:
    raw, = docs("mark_price_legacy_delivery")
    now_ms = int(time.time() * 1000)
    delivery, = parse_frame(restamped(raw, now_ms), now_ms, SKEW_MS).updates
    assert delivery.symbol == "BTCUSD_201225" and delivery.mark_price == 10934.62615417
    assert delivery.funding_rate is None and delivery.funding_rate_str is None and delivery.next_funding_time is None


def test_binances_own_all_market_example_is_not_json_and_is_refused_as_such() -> None:
    """As published, the example lacks the comma after ``"i"``: a frame like it is one labelled error, no crash."""
    raw, = docs("mark_price_all_market_as_published")
    with pytest.raises(FrameError) as info:
        parse_frame(raw)
    assert info.value.kind == "bad_json"
    fixed = raw.replace('"11784.62659091" "P"', '"11784.62659091", "P"')  # the one character it lacks
    now_ms = int(time.time() * 1000)
    assert [u.symbol for u in parse_frame(restamped(fixed, now_ms), now_ms, SKEW_MS).updates] == ["BTCUSDT"]


@pytest.mark.parametrize("raw", CAPTURED_2026, ids=["BTCUSDT", "BTCUSDT_260925", "XAUUSDT"])
def test_captured_2026_rows_are_rejected_as_recorded_and_parsed_once_restamped(raw: str) -> None:
    now_ms = int(time.time() * 1000)
    assert [kind for kind, _ in parse_frame(raw, now_ms, SKEW_MS).defects] == ["implausible_time"]
    update, = parse_frame(restamped(raw, now_ms), now_ms, SKEW_MS).updates
    recorded = json.loads(raw)
    assert update.event_time == now_ms and update.symbol == recorded["s"] and update.mark_price_str == recorded["p"]
    assert (update.mark_average_str, update.symbol_type) == (recorded["ap"], recorded["st"])
    if recorded["T"] == 0:  # the dated contract: "r":"0.00000000" with no funding scheduled is no rate at all
        assert update.funding_rate is None and update.next_funding_time is None
    else:
        assert update.funding_rate_str == recorded["r"] and update.next_funding_time == recorded["T"]


def test_a_recorded_rest_error_body_becomes_a_rejection_with_binances_code_and_message() -> None:
    raw, = docs("rest_error")
    with HttpFake() as binance:
        binance.fail("/fapi/v1/klines", 400, body=json.loads(raw))
        with pytest.raises(RequestRejected) as info:
            BinanceRest(binance.url, retries=2, backoff_s=0.01).klines("NOPEUSDT", "1h", 2)
        assert binance.counts["/fapi/v1/klines"] == 1  # a 400 is never retried
    assert (info.value.status, info.value.code, info.value.msg) == (400, -1121, "Invalid symbol.")
