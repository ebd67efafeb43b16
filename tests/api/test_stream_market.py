"""The local WebSocket's kline and ticker streams (issue 22 over issue 21's market feed): Binance's event shapes,
the strings the REST routes serve, and the streams refused while the market feed is off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ..conftest import scaled, wait_until
from .stream_stack import StreamStack, recv_json


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamStack]:
    tmp = tmp_path_factory.mktemp("market-ws")
    s = StreamStack(tmp, rest=True, market=True)
    hub = s.api.hub
    assert hub is not None
    wait_until(lambda: requests.get(s.api.url + "/fapi/v1/ticker/24hr", params={"symbol": "BTCUSDT"},
                                    timeout=5).status_code == 200, scaled(30))
    wait_until(lambda: hub.market_ready, scaled(5))  # the hub looks every 0.25 s
    yield s
    s.stop()


def first(ws: Any, stream: str) -> Any:
    while True:
        message = recv_json(ws, timeout=10)
        if message.get("stream") == stream:
            return message["data"]


def test_kline_events_carry_the_candle_rest_serves(stack: StreamStack) -> None:
    with connect(stack.ws + "/market/stream?streams=btcusdt@kline_1h", open_timeout=scaled(5)) as ws:
        event = first(ws, "btcusdt@kline_1h")
        assert event["e"] == "kline" and event["s"] == "BTCUSDT" and event["E"] > 0
        k = event["k"]
        assert list(k) == ["t", "T", "s", "i", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
        assert k["i"] == "1h" and k["T"] == k["t"] + 3_600_000 - 1 and isinstance(k["o"], str)
        rows = requests.get(stack.api.url + "/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1h",
                                                                      "limit": 3}, timeout=5)
        if rows.status_code == 200:  # the open hour, as REST shows it now (the stream may have moved on since)
            assert k["t"] in [r[0] for r in rows.json()]


def test_ticker_array_has_binances_event_fields(stack: StreamStack) -> None:
    with connect(stack.ws + "/market/ws/!ticker@arr", open_timeout=scaled(5)) as ws:
        rows = recv_json(ws, timeout=10)
        assert isinstance(rows, list) and rows
        row = next((r for r in rows if r["s"] == "BTCUSDT"), rows[0])
        assert list(row)[:4] == ["e", "E", "s", "p"] and row["e"] == "24hrTicker"
        assert set(row) == {"e", "E", "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q", "O", "C", "F", "L", "n"}
        rest = requests.get(stack.api.url + "/fapi/v1/ticker/24hr", params={"symbol": row["s"]}, timeout=5).json()
        assert rest["symbol"] == row["s"] and isinstance(row["q"], str) and isinstance(row["n"], int)


def test_market_streams_are_not_served_while_the_feed_is_off(tmp_path: Path) -> None:
    s = StreamStack(tmp_path)
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(s.ws + "/market/ws/btcusdt@kline_1h", open_timeout=scaled(5))
        assert refused.value.response.status_code == 400 and b"not served here" in refused.value.response.body
        with connect(s.ws + "/market/ws/0", open_timeout=scaled(5)) as ws:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["!ticker@arr"], "id": 1}))
            assert json.loads(ws.recv(timeout=scaled(5)))["error"]["code"] == 2
    finally:
        s.stop()


def test_a_candle_without_a_stream_message_is_not_sent_with_a_made_up_event_time() -> None:
    """A symbol whose candles came from REST only (no trades since the feed started) has no event time: no kline
    event goes out for it rather than one with ``"E": 0``."""
    from volspike_funding.api.stream_frames import MarketFrames
    from volspike_funding.store.marketfile import MarketSnapshot

    row = [1790000000000, "1.0", "1.0", "1.0", "1.0", "0", 1790003599999, "0", 0, "0", "0", "0"]
    entry = {"since": 1.0, "rows": [row], "final": [False], "receivedAt": None, "firstOpen": None}
    frames = MarketFrames()
    wanted = {"quietusdt@kline_1h"}
    assert frames.update(MarketSnapshot({"klines": {"QUIETUSDT": entry}, "tickers": {}}), wanted) == []
    moved = {**entry, "rows": [[*row[:4], "1.1", *row[5:]]], "receivedAt": 1790000100.5}
    (name, _), = frames.update(MarketSnapshot({"klines": {"QUIETUSDT": moved}, "tickers": {}}), wanted)
    assert name == "quietusdt@kline_1h"
