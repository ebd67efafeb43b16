"""The local Binance-compatible WebSocket (issue 22): endpoints, frames as Binance sent them, the control
protocol with Binance's replies and error frames, and Binance's limits — against the real daemon and API."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from volspike_funding.binance.stream_requests import MAX_STREAMS

from ..conftest import scaled, wait_until
from .stream_stack import StreamStack, recv_json, recv_reply, request


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamStack]:
    s = StreamStack(tmp_path_factory.mktemp("ws"))
    yield s
    s.stop()


def upstream_rows(stack: StreamStack, count: int = 3) -> dict[tuple[str, int], dict[str, Any]]:
    """What the fake Binance itself sent, by (symbol, event time), read as a second client of it."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with connect(stack.fake.url, open_timeout=scaled(5)) as upstream:
        for _ in range(count):
            for row in json.loads(upstream.recv(timeout=scaled(5)))["data"]:
                rows[(row["s"], row["E"])] = row
    return rows


def test_combined_all_market_rows_are_binances_own(stack: StreamStack) -> None:
    with stack.connect("/market/stream?streams=!markPrice@arr@1s") as ws:
        upstream = upstream_rows(stack, 10)
        seen = 0
        deadline = time.monotonic() + scaled(10)
        while seen < 20 and time.monotonic() < deadline:
            message = recv_json(ws)
            assert set(message) == {"stream", "data"} and message["stream"] == "!markPrice@arr@1s"
            for row in message["data"]:
                sent = upstream.get((row["s"], row["E"]))
                if sent is not None:
                    # Same keys, same order, same decimal strings, same event time: Binance's row, re-emitted.
                    assert json.dumps(row) == json.dumps(sent)
                    seen += 1
        assert seen >= 20
        kinds = {row.get("st") for row in message["data"]}
        assert kinds <= {1}, "COIN-M rows are not USD-M data and are never re-emitted"


def test_raw_endpoint_per_symbol_stream(stack: StreamStack) -> None:
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as ws:
        first, second = recv_json(ws), recv_json(ws)
        for row in (first, second):
            assert row["e"] == "markPriceUpdate" and row["s"] == "BTCUSDT" and isinstance(row["p"], str)
        assert second["E"] > first["E"]


def test_ccxt_style_connection_subscribes_after_opening(stack: StreamStack) -> None:
    """ccxt opens /market/ws/<n> (not a stream name: ignored, as Binance does) and subscribes."""
    with stack.connect("/market/ws/0") as ws:
        assert request(ws, "LIST_SUBSCRIPTIONS", rid=1) == {"result": [], "id": 1}
        assert request(ws, "SUBSCRIBE", ["ETHUSDT@markPrice@1s"], rid=2) == {"result": None, "id": 2}
        row = recv_json(ws)
        assert row["s"] == "ETHUSDT"
        assert request(ws, "LIST_SUBSCRIPTIONS", rid=3) == {"result": ["ethusdt@markPrice@1s"], "id": 3}
        assert request(ws, "SET_PROPERTY", ["combined", True], rid=4) == {"result": None, "id": 4}
        assert request(ws, "GET_PROPERTY", ["combined"], rid=5) == {"result": True, "id": 5}
        wrapped = recv_json(ws)
        while "stream" not in wrapped:
            wrapped = recv_json(ws)
        assert wrapped["stream"] == "ethusdt@markPrice@1s" and wrapped["data"]["s"] == "ETHUSDT"
        assert request(ws, "UNSUBSCRIBE", ["ethusdt@markPrice@1s"], rid="a-uuid-string") == \
            {"result": None, "id": "a-uuid-string"}
        assert request(ws, "LIST_SUBSCRIPTIONS", rid=None) == {"result": [], "id": None}
        with pytest.raises(TimeoutError):  # nothing more once unsubscribed (a frame in flight is read first)
            while True:
                recv_json(ws, timeout=1.0)


def test_three_second_variant_keeps_binances_cadence(stack: StreamStack) -> None:
    with stack.connect("/market/stream?streams=!markPrice@arr/btcusdt@markPrice") as ws:
        arrivals: dict[str, list[float]] = {"!markPrice@arr": [], "btcusdt@markPrice": []}
        while min(len(v) for v in arrivals.values()) < 3:
            message = recv_json(ws, timeout=10)
            arrivals[message["stream"]].append(time.monotonic())
        for times in arrivals.values():
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert min(gaps) >= 2.4, gaps  # the fake sends every 0.1 s: a 1 s stream would show it


@pytest.mark.parametrize("sent, code, text", [
    ("not json", 3, "Invalid JSON"),
    ("[1, 2]", 2, "Invalid request"),
    ('{"params": [], "id": 1}', 2, "missing field `method`"),
    ('{"method": "SUBSCRIBEE", "params": [], "id": 1}', 2, "unknown variant `SUBSCRIBEE`"),
    ('{"method": "SUBSCRIBE", "params": [], "id": -1}', 2, "request ID must be an unsigned integer"),
    ('{"method": "SUBSCRIBE", "params": [], "id": 1.5}', 2, "request ID must be an unsigned integer"),
    ('{"method": "SUBSCRIBE", "params": [], "id": true}', 2, "request ID must be an unsigned integer"),
    ('{"method": "SUBSCRIBE", "params": "btcusdt@markPrice", "id": 1}', 2, "params must be an array"),
    ('{"method": "SUBSCRIBE", "params": [42], "id": 1}', 2, "non-empty string"),
    ('{"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1}', 2, "not served here"),
    ('{"method": "SUBSCRIBE", "params": ["bad/name@markPrice"], "id": 1}', 2, "not served here"),
    ('{"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}', 1, "expected Boolean"),
    ('{"method": "GET_PROPERTY", "params": ["colour"], "id": 1}', 0, "Unknown property"),
    ('{"method": "GET_PROPERTY", "params": [3], "id": 1}', 2, "property name must be a string"),
])
def test_malformed_requests_get_binances_error_frames(stack: StreamStack, sent: str, code: int, text: str) -> None:
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as ws:
        ws.send(sent)
        answer = recv_reply(ws)
        assert answer["error"]["code"] == code and text in answer["error"]["msg"], answer
        assert recv_json(ws)["s"] == "BTCUSDT"  # the connection and its stream go on
        assert request(ws, "LIST_SUBSCRIPTIONS", rid=9) == {"result": ["btcusdt@markPrice@1s"], "id": 9}


def test_public_and_private_categories_open_but_carry_nothing(stack: StreamStack) -> None:
    """Binance's SDK opens /market, /public and /private at once: the other two open, and say what they lack."""
    for path in ("/public/stream", "/private/stream", "/public/ws/0"):
        with stack.connect(path) as ws:
            answer = request(ws, "SUBSCRIBE", ["btcusdt@bookTicker"], rid=1)
            assert answer["error"]["code"] == 2 and "mark prices on /market" in answer["error"]["msg"]
            assert request(ws, "LIST_SUBSCRIPTIONS", rid=2) == {"result": [], "id": 2}
    with pytest.raises(InvalidStatus) as refused:
        stack.connect("/public/ws/btcusdt@bookTicker")
    assert refused.value.response.status_code == 400


def test_binary_and_fragmented_requests_are_read_whole(stack: StreamStack) -> None:
    with stack.connect("/market/ws/0") as ws:
        ws.send(b'{"method": "LIST_SUBSCRIPTIONS", "id": 1}')
        assert recv_reply(ws) == {"result": [], "id": 1}
        ws.send(iter(['{"method": "SUBSCRIBE", ', '"params": ["btcusdt@markPrice@1s"], ', '"id": 2}']))
        assert recv_reply(ws) == {"result": None, "id": 2}


def test_oversized_message_closes_with_1009(stack: StreamStack) -> None:
    with stack.connect("/market/ws/0", max_size=None) as ws:
        ws.send("x" * (200 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_more_than_ten_messages_a_second_is_binances_1008(stack: StreamStack) -> None:
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as bystander, stack.connect("/market/ws/0") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for i in range(100):  # 100 a second, as a runaway bot would
                ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                time.sleep(0.01)
            recv_json(ws)
            while True:
                recv_json(ws)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "Too many requests")
        assert recv_json(bystander)["s"] == "BTCUSDT"


def test_stream_limit(stack: StreamStack) -> None:
    names = [f"sym{i}usdt@markPrice@1s" for i in range(MAX_STREAMS + 1)]
    with pytest.raises(InvalidStatus) as refused:
        stack.connect("/market/stream?streams=" + "/".join(names))
    assert refused.value.response.status_code == 400
    assert b"more than 1024 streams" in refused.value.response.body
    with stack.connect("/market/ws/0") as ws:
        assert request(ws, "SUBSCRIBE", names[:MAX_STREAMS], rid=1) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": names[MAX_STREAMS:], "id": 2}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@pytest.mark.parametrize("path, status, text", [
    ("/market/ws/btcusdt@depth", 400, b"not served here"),
    ("/market/stream?streams=btcusdt@aggTrade", 400, b"not served here"),
    ("/ws/btcusdt@markPrice", 404, b"Not Found"),  # Binance's pre-2026 paths: refused, never left silent
    ("/stream?streams=!markPrice@arr@1s", 404, b"Not Found"),
])
def test_refused_handshakes_say_why_in_json(stack: StreamStack, path: str, status: int, text: bytes) -> None:
    with pytest.raises(InvalidStatus) as refused:
        stack.connect(path)
    assert refused.value.response.status_code == status
    assert text in refused.value.response.body and refused.value.response.body.startswith(b"{")


def test_a_broken_handshake_is_answered_in_json(stack: StreamStack) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", stack.api.sock.getsockname()[1]), timeout=scaled(5)) as sock:
        sock.sendall(b"GET /market/ws/0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(body)["detail"] == {"error": "Invalid WebSocket handshake",
                                          "reason": "missing Sec-WebSocket-Key header."}


def test_plain_get_of_a_stream_path_is_426_json(stack: StreamStack) -> None:
    import requests

    answer = requests.get(stack.api.url + "/market/stream", timeout=5)
    assert answer.status_code == 426 and answer.json()["detail"]["error"] == "Upgrade Required"


def test_keepalive_pings_and_dead_peers(stack: StreamStack) -> None:
    """Binance pings every 3 minutes and drops a peer silent for 10; here at a test's scale."""
    from .stream_stack import handshake_socket

    hub = stack.api.hub
    assert hub is not None
    hub.ping_interval_s, hub.pong_timeout_s = 0.3, scaled(2.0)
    try:
        with stack.connect("/market/ws/btcusdt@markPrice@1s") as alive:  # websockets answers pings itself
            dead = handshake_socket(stack.api.sock.getsockname()[1], "/market/ws/0")
            dead.settimeout(scaled(10))
            received = b""
            while True:  # pings arrive, never answered, then the close (1011) and EOF
                chunk = dead.recv(65536)
                if not chunk:
                    break
                received += chunk
            assert b"\x89" in received[:2] or b"\x89\x00" in received  # a ping frame came first
            assert (1011).to_bytes(2, "big") in received
            dead.close()
            time.sleep(scaled(2.5))
            assert recv_json(alive)["s"] == "BTCUSDT"
    finally:
        hub.ping_interval_s, hub.pong_timeout_s = 180.0, 600.0


def test_metrics_count_connections(stack: StreamStack) -> None:
    import requests

    with stack.connect("/market/ws/btcusdt@markPrice@1s"):
        def connections() -> float:
            text = requests.get(stack.api.url + "/metrics", timeout=5).text
            return float(next(line.split()[1] for line in text.splitlines()
                              if line.startswith("funding_ws_connections ")))
        assert wait_until(lambda: connections() >= 1, scaled(5))


def test_a_request_racing_the_servers_close_is_not_answered(stack: StreamStack,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A client that sends after the server's close (here: the 1008 of a rate breach) gets nothing back and no
    error surfaces in the API (the protocol refuses to send once closing)."""
    from .stream_stack import handshake_socket

    sock = handshake_socket(stack.api.sock.getsockname()[1], "/market/ws/0")
    frame = b"\x81\x80\x00\x00\x00\x00"  # an empty masked text frame
    sock.sendall(frame * 11)  # the 11th breaks the limit
    time.sleep(1.2)  # the rate window has passed, the close's grace has not: this one would be answered
    sock.sendall(frame)
    sock.settimeout(scaled(5))
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    assert b"\x88" in received and (1008).to_bytes(2, "big") + b"Too many requests" in received
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as ws:  # the API goes on
        assert recv_json(ws)["s"] == "BTCUSDT"
    assert "Fatal error" not in caplog.text and "InvalidState" not in caplog.text
