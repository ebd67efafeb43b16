"""The local WebSocket under faults (issue 22): a subscriber that never reads, 2,000 idle connections, the
connection cap, an upstream stall (the documented stale close, then recovery) and an API restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..conftest import scaled, wait_until
from .stream_stack import StreamStack, handshake_socket, recv_json


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StreamStack]:
    s = StreamStack(tmp_path, n_symbols=300, FUNDING_WS_MAX_BUFFER_KB="64")
    yield s
    s.stop()


def metric(stack: StreamStack, name: str) -> float:
    text = requests.get(stack.api.url + "/metrics", timeout=5).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def test_a_subscriber_that_never_reads_is_dropped_alone(stack: StreamStack) -> None:
    port = stack.api.sock.getsockname()[1]
    stuck = handshake_socket(port, "/market/stream?streams=!markPrice@arr@1s", rcvbuf=4096)
    with stack.connect("/market/stream?streams=!markPrice@arr@1s") as reader:
        gaps, last = [], time.monotonic()
        assert wait_until(lambda: metric(stack, 'funding_ws_closed_total{reason="slow"}') >= 1, scaled(20))
        for _ in range(5):  # the reader was never held up: frames keep coming at the feed's pace
            recv_json(reader)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert requests.get(stack.api.url + "/funding/BTCUSDT", timeout=5).status_code == 200
    stuck.settimeout(scaled(5))
    with pytest.raises(OSError):  # aborted: a reset, or EOF once the kernel's buffer is read
        while stuck.recv(1 << 20):
            pass
        raise ConnectionResetError("closed")
    stuck.close()


def test_two_thousand_idle_connections(stack: StreamStack) -> None:
    async def run() -> None:
        idle = [await websockets.connect(stack.ws + f"/market/ws/{i}", open_timeout=scaled(20))
                for i in range(2000)]
        try:
            assert metric(stack, "funding_ws_connections") >= 2000
            async with websockets.connect(stack.ws + "/market/ws/btcusdt@markPrice@1s") as live:
                assert b"BTCUSDT" in (await asyncio.wait_for(live.recv(), scaled(5))).encode()
            assert requests.get(stack.api.url + "/funding/health", timeout=5).status_code == 200
            with pytest.raises(InvalidStatus) as full:  # beyond FUNDING_WS_MAX_CONNECTIONS (2,048)
                for _ in range(60):
                    idle.append(await websockets.connect(stack.ws + "/market/ws/0", open_timeout=scaled(20)))
            assert len(idle) == 2048
            assert full.value.response.status_code == 503 and full.value.response.headers["Retry-After"] == "5"
            assert b"Too many WebSocket connections" in full.value.response.body
        finally:
            await asyncio.gather(*(ws.close() for ws in idle))

    asyncio.run(run())
    assert wait_until(lambda: metric(stack, "funding_ws_connections") == 0, scaled(10))


def test_upstream_stall_closes_with_1013_then_recovers(stack: StreamStack) -> None:
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as ws:
        recv_json(ws)
        stack.fake.stalled = True
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                recv_json(ws, timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "Try again later" in closed.value.rcvd.reason and "s old" in closed.value.rcvd.reason
    with pytest.raises(InvalidStatus) as refused:
        stack.connect("/market/ws/btcusdt@markPrice@1s")
    body = refused.value.response.body
    assert refused.value.response.status_code == 503 and refused.value.response.headers["Retry-After"] == "5"
    assert b'"Data stale"' in body and b"s old" in body
    stack.fake.stalled = False  # the daemon's watchdog reconnects; the next handshake is served again

    def served() -> bool:
        try:
            with stack.connect("/market/ws/btcusdt@markPrice@1s") as again:
                return recv_json(again)["s"] == "BTCUSDT"
        except InvalidStatus:
            return False
    assert wait_until(served, scaled(20), interval=0.2)


def test_api_restart_says_going_away_and_clients_come_back(stack: StreamStack) -> None:
    port = stack.api.sock.getsockname()[1]
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as ws:
        recv_json(ws)
        stack.api.__exit__()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    stack.api = stack.start_api(port)
    with stack.connect("/market/ws/btcusdt@markPrice@1s") as again:
        assert recv_json(again)["s"] == "BTCUSDT"


def test_subscribers_that_read_too_slowly_share_one_memory_budget(tmp_path: Path) -> None:
    """Each subscriber alone may hold a lot (FUNDING_WS_MAX_BUFFER_KB), but all of them together no more than
    FUNDING_API_MAX_BUFFERED_MB: beyond, the one that tipped it over is dropped."""
    s = StreamStack(tmp_path, n_symbols=300, FUNDING_WS_MAX_BUFFER_KB="100000", FUNDING_API_MAX_BUFFERED_MB="1")
    try:
        port = s.api.sock.getsockname()[1]
        stuck = [handshake_socket(port, "/market/stream?streams=!markPrice@arr@1s", rcvbuf=4096) for _ in range(20)]
        hub = s.api.hub
        assert hub is not None
        assert wait_until(lambda: metric(s, 'funding_ws_closed_total{reason="slow"}') >= 1, scaled(30))
        held = sum(x.transport.get_write_buffer_size() for x in list(hub.stalled) if x.transport is not None)
        assert held <= 1024 * 1024 + 200 * 1024  # the budget, plus at most the frame being written
        with s.connect("/market/ws/btcusdt@markPrice@1s") as reader:
            assert recv_json(reader)["s"] == "BTCUSDT"
        for sock in stuck:
            sock.close()
    finally:
        s.stop()
