"""The local WebSocket's world: the fake Binance, the real daemon and the real API, plus small clients."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import load_settings
from volspike_funding.fake.market import Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.feed.daemon import Daemon

from ..conftest import FAST, scaled, wait_until


class StreamStack:
    def __init__(self, tmp: Path, n_symbols: int = 30, rest: bool = False, market: bool = False, **env: str) -> None:
        """``rest``: a fake Binance REST too, for the reference data (a client's exchangeInfo); ``market``: the
        market feed (klines and tickers) on, with its REST backfill."""
        self.market = Market(n_symbols)
        self.fake = FakeBinanceWS(self.market, cadence_s=scaled(0.1)).start()
        self.rest = FakeBinanceRest(self.market).start() if rest else None
        if self.rest is not None:
            env = {"BINANCE_REST_URL": self.rest.url, "FUNDING_REFERENCE_ENABLED": "true", **env}
        if market:
            assert self.rest is not None, "the market feed backfills from REST"
            self.rest.market_candles = True
            env = {"FUNDING_MARKET_ENABLED": "true", "FUNDING_MARKET_WS_URL": self.fake.market_url,
                   "FUNDING_STALE_AFTER_S": "5", **env}
        self.settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "BINANCE_WS_URL": self.fake.url,
                                       "FUNDING_STATE_FILE": str(tmp / "state" / "s.json"), **FAST, **env})
        self.settings.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(self.settings)
        self._thread = threading.Thread(target=self.daemon.run, daemon=True)
        self._thread.start()
        self.api = self.start_api()
        if self.rest is not None:
            url = self.api.url + "/fapi/v1/exchangeInfo"
            wait_until(lambda: requests.get(url, timeout=5).status_code == 200, scaled(15))

    def start_api(self, port: int = 0) -> ServerThread:
        api = ServerThread(self.settings, port=port).__enter__()
        assert api.hub is not None
        hub = api.hub
        wait_until(lambda: hub.problem(time.time()) is None, scaled(15))  # the daemon's data has arrived
        return api

    @property
    def ws(self) -> str:
        return self.api.ws_url

    def connect(self, path: str, **options: Any) -> ClientConnection:
        return connect(self.ws + path, open_timeout=scaled(5), close_timeout=scaled(2), **options)

    def stop(self) -> None:
        self.daemon.request_stop()
        self._thread.join(scaled(10))
        self.api.__exit__()
        self.fake.stop()
        if self.rest is not None:
            self.rest.stop()


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(ws.recv(timeout=scaled(timeout)))


def recv_reply(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next message that is not stream data (a reply or an error frame)."""
    while True:
        message = recv_json(ws, timeout)
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return message


def request(ws: ClientConnection, method: str, params: list[Any] | None = None, rid: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"method": method, "id": rid}
    if params is not None:
        body["params"] = params
    ws.send(json.dumps(body))
    return recv_reply(ws)


def handshake_socket(port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    """A raw TCP client that completes the WebSocket handshake and then does whatever the test wants (never
    reading, never answering pings)."""
    sock = socket.socket()
    if rcvbuf is not None:  # before connect: a fixed, small buffer (no autotuning) fills at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    return sock
