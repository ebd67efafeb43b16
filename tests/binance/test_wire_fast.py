"""The all-market fast path (typed decoding with msgspec, issue 21) against the generic parser it stands in for: on
every frame, recorded or generated, both give the same answer (the same rows, the same counts, or the same error),
and recorded traffic takes the fast path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings, strategies as st

from volspike_funding.binance.wire import (_ALL_MARKET, _ALL_MARKET_NUMBERS, _NUMBERS, _parse_all_market, parse_frame,
                                         parse_frame_generic)
from volspike_funding.core.errors import FrameError

DATA = Path(__file__).parent.parent / "data"
NOW_MS = 1_791_382_993_000
SKEW_MS = 60_000


def answer(parse: Any, raw: str | bytes, now_ms: int | None) -> Any:
    try:
        return parse(raw, now_ms, SKEW_MS)
    except FrameError as exc:
        return ("error", exc.kind)


def same(raw: str | bytes, now_ms: int | None = NOW_MS) -> Any:
    fast, generic = answer(parse_frame, raw, now_ms), answer(parse_frame_generic, raw, now_ms)
    if isinstance(generic, tuple) and generic[0] == "error":
        assert fast == generic, raw
        return fast
    # The fast path names no defect: where the generic parser found one, it answered for the whole frame.
    assert fast == generic, (raw, fast, generic)
    return fast


def test_recorded_all_market_frames_take_the_fast_path_and_agree() -> None:
    for line in (DATA / "markprice_frames.jsonl").read_text("utf-8").splitlines():
        frame = json.loads(line)
        if isinstance(frame, dict) and frame.get("stream", "").startswith("!markPrice@arr"):
            same(line, None)
            if all(isinstance(row, dict) and row.get("e", "markPriceUpdate") == "markPriceUpdate"
                   for row in frame["data"]) and not parse_frame_generic(line).defects:
                assert _parse_all_market(line, None, 0) is not None, line[:200]
    rows = (DATA / "markprice_2026.jsonl").read_text("utf-8").splitlines()
    frame = '{"stream":"!markPrice@arr@1s","data":[' + ",".join(rows) + "]}"
    parsed = same(frame, None)
    assert _parse_all_market(frame, None, 0) is not None and parsed.other_kinds == {"coin_m": 1}


DECIMAL = st.sampled_from(["83084.30000000", "0.00000078", "-0.00015233", "0", "0.00000000", "", "1_0", " 1.5 ",
                           "nan", "inf", "-inf", "1e400", "abc", "١٢٣", "-5"])
ANY = st.one_of(DECIMAL, st.none(), st.booleans(), st.integers(-2, 2 ** 65), st.floats(allow_nan=False),
                st.just([]), st.just({}))
TIME = st.one_of(st.sampled_from([NOW_MS, NOW_MS - 1000, NOW_MS + SKEW_MS + 1, 0, -1, 2 ** 63, 2 ** 64 + 5]),
                 ANY)
SYMBOL = st.one_of(st.sampled_from(["BTCUSDT", "币安人生USDT", "BTCUSD_PERP", "", "BTC/USDT", "x" * 41, "A B"]), ANY)


@st.composite
def rows(draw: st.DrawFn) -> Any:
    row: dict[str, Any] = {"e": "markPriceUpdate", "E": NOW_MS, "s": "BTCUSDT", "p": "83084.3", "ap": "83084.2",
                           "i": "83123.6", "P": "83195.1", "r": "0.0001", "T": NOW_MS + 3_600_000, "st": 1}
    for key, values in (("E", TIME), ("s", SYMBOL), ("p", ANY), ("ap", ANY), ("i", ANY), ("P", ANY), ("r", ANY),
                        ("T", TIME),
                        ("st", st.one_of(st.sampled_from([1, 2, 3]), ANY)),
                        ("e", st.sampled_from(["markPriceUpdate", "kline", 1]))):
        choice = draw(st.integers(0, 6))
        if choice == 0:
            row.pop(key)
        elif choice == 1:
            row[key] = draw(values)
    return row if draw(st.integers(0, 20)) else draw(ANY)


@settings(max_examples=400, deadline=None)
@given(st.lists(rows(), max_size=6), st.sampled_from(["!markPrice@arr@1s", "!markPrice@arr", "btcusdt@markPrice"]))
def test_on_any_frame_the_fast_path_and_the_generic_parser_agree(data: list[Any], stream: str) -> None:
    same(json.dumps({"stream": stream, "data": data}, ensure_ascii=False))
    same(json.dumps({"stream": stream, "data": data}), None)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                 st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
                 st.text(alphabet="0123456789.-+eE_ naif", min_size=1, max_size=24)))
def test_where_msgspecs_lax_mode_takes_a_decimal_string_it_reads_what_float_reads(text: str) -> None:
    """The fast path's numbers come from msgspec's string-to-float parse; the slow path's from ``float()``."""
    try:
        number = _ALL_MARKET_NUMBERS.decode(json.dumps({"data": [{"p": "1", "i": text}]})).data[0].i
    except msgspec.ValidationError:
        return
    assert number == float(text)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                 st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
                 st.text(alphabet="0123456789.-+eE_ naif", min_size=1, max_size=24), st.just("")))
def test_the_fast_path_converts_its_decoded_strings_as_decoding_the_text_would(text: str) -> None:
    """The fast path converts the decoded strings to numbers (``msgspec.convert``) rather than decoding the text a
    second time; both must take and refuse the same strings, with the same numbers."""
    raw = json.dumps({"stream": "!markPrice@arr@1s", "data": [{"s": "X", "E": 1, "p": "1", "i": text, "P": text,
                                                                 "r": text, "ap": text}]})

    def outcome(read: Any) -> Any:
        try:
            return read()
        except msgspec.ValidationError:
            return "refused"

    decoded = outcome(lambda: _ALL_MARKET_NUMBERS.decode(raw).data)
    converted = outcome(lambda: msgspec.convert(_ALL_MARKET.decode(raw).data, _NUMBERS, strict=False,
                                                from_attributes=True))
    assert converted == decoded
