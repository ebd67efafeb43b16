"""Clients that send a request and never read the answer cannot hold the API's memory (issue 20, point 4); a stop
on request exits 0 (issue 23, point 9).

Measured before the fix: 4,000 such clients of exchangeInfo (830 KB an answer) took the API from 68 MB to 1,214 MB
of RSS, and ``close()`` kept every unread answer for ever.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import requests

from volspike_funding.fake.market import Market
from volspike_funding.store import reference

from ..conftest import wait_until
from .test_api_hardening import ApiProcess

CLIENTS = 200


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def big_exchange_info(state: Path) -> int:
    market = Market(700)
    info = {"timezone": "UTC", "serverTime": int(time.time() * 1000),
            "symbols": [market.exchange_symbol(c) for c in market.listed().values()]}
    text = json.dumps(info).encode()
    reference.write(state.with_name(".funding_reference.json"),
                    reference.ReferenceData(exchange_info=text, exchange_info_at=time.time()))
    return len(text)


def closed_by_server(sock: socket.socket) -> bool:
    """Drain what the kernel already holds; True once the server's end is gone (EOF or reset)."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_unread_answers_are_bounded_and_dropped(tmp_path: Path) -> None:
    api = ApiProcess(tmp_path, FUNDING_API_WRITE_TIMEOUT_S="1", FUNDING_API_MAX_BUFFERED_MB="4",
                     FUNDING_LOG_LEVEL="WARNING")
    held: list[socket.socket] = []
    try:
        size = big_exchange_info(api.state)
        wait_until(lambda: requests.get(api.url + "/fapi/v1/exchangeInfo", timeout=5).status_code == 200, 15)
        before = rss_mb(api.proc.pid)
        for _ in range(CLIENTS):
            s = socket.create_connection(("127.0.0.1", api.port))
            s.sendall(b"GET /fapi/v1/exchangeInfo HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        # A client that reads is served meanwhile.
        assert requests.get(api.url + "/funding/BTCUSDT", timeout=5).status_code == 200
        # Every unread answer is dropped with its connection (the budget at once, the rest after the deadline).
        wait_until(lambda: all(closed_by_server(s) for s in held), 30)
        grown = rss_mb(api.proc.pid) - before
        # Without the bounds the unread answers alone were CLIENTS x size (~160 MB) on top of the baseline.
        assert grown < CLIENTS * size / 2**20 / 2, f"RSS grew {grown:.0f} MB"
        assert requests.get(api.url + "/fapi/v1/exchangeInfo", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
        log = api.stop()
    assert "FUNDING_API_MAX_BUFFERED_MB" in log and "FUNDING_API_WRITE_TIMEOUT_S" in log
    assert "Traceback" not in log


def test_sigterm_and_sigint_exit_0_as_documented(tmp_path: Path) -> None:
    """uvicorn re-raises a signal it handled after shutting down: the API ended by SIGTERM (-15), not with 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        api = ApiProcess(tmp_path)
        api.proc.send_signal(sig)
        assert api.proc.wait(15) == 0, f"exit code after {sig.name}"
        assert "Traceback" not in api.log.read_text()
