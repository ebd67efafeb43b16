"""The local WebSocket's permessage-deflate (RFC 7692): a client that offers it gets the all-market arrays as one
compressed message shared by every such subscriber, small messages plain (which RFC 7692 allows), and a client
that did not offer it, or asked for a smaller server window, gets every message plain — read on the wire."""

from __future__ import annotations

import json
import socket
import zlib
from typing import Any, Iterator

import pytest

from ..conftest import scaled
from .stream_stack import StreamStack, recv_json, request


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamStack]:
    s = StreamStack(tmp_path_factory.mktemp("deflate"))
    yield s
    s.stop()


class WireClient:
    """A raw client: its own handshake (with the extension offer the test names) and the server's frames as they
    are on the wire."""

    def __init__(self, port: int, path: str, offer: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
        extension = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                          f"{extension}\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in head.decode().split("\r\n")[1:])}

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def frame(self) -> tuple[bool, int, bytes]:
        """(RSV1, opcode, payload) of the next frame (the server's are unfragmented and unmasked)."""
        first, second = self._take(2)
        size = second & 0x7F
        if size >= 126:
            size = int.from_bytes(self._take(2 if size == 126 else 8), "big")
        return bool(first & 0x40), first & 0x0F, self._take(size)

    def message(self) -> tuple[bool, Any]:
        """(was compressed, JSON) of the next data message."""
        while True:
            compressed, opcode, data = self.frame()
            if opcode == 0x1:
                if compressed:
                    data = zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")
                return compressed, json.loads(data)

    def close(self) -> None:
        self.sock.close()


def test_all_market_arrays_travel_compressed_to_clients_that_offer_deflate(stack: StreamStack) -> None:
    client = WireClient(stack.api.sock.getsockname()[1], "/market/stream?streams=!markPrice@arr@1s/btcusdt@markPrice@1s",
                        "permessage-deflate; client_max_window_bits")
    try:
        agreed = client.headers["sec-websocket-extensions"]
        # No context takeover on the server's side: each message stands alone, so one compressed frame serves
        # every subscriber; the client's side is as it offered (imposing it fails some clients' handshakes).
        assert "permessage-deflate" in agreed and "server_no_context_takeover" in agreed
        assert "client_no_context_takeover" not in agreed
        seen: dict[str, bool] = {}
        while len(seen) < 2:
            compressed, message = client.message()
            seen[message["stream"]] = compressed
            if message["stream"] == "!markPrice@arr@1s":
                assert len(message["data"]) > 10 and message["data"][0]["e"] == "markPriceUpdate"
        assert seen == {"!markPrice@arr@1s": True, "btcusdt@markPrice@1s": False}
    finally:
        client.close()


@pytest.mark.parametrize("offer", [None, "permessage-deflate; server_max_window_bits=10"])
def test_other_clients_get_every_message_plain(stack: StreamStack, offer: str | None) -> None:
    """No offer: no extension. A smaller server window than the shared frames are made with: the extension is
    agreed (the replies are compressed by it) but the shared frames go out uncompressed rather than re-made."""
    client = WireClient(stack.api.sock.getsockname()[1], "/market/ws/!markPrice@arr@1s", offer)
    try:
        assert ("sec-websocket-extensions" in client.headers) is (offer is not None)
        for _ in range(2):
            compressed, rows = client.message()
            assert not compressed and rows[0]["e"] == "markPriceUpdate"
    finally:
        client.close()


def test_a_library_client_reads_compressed_frames_and_replies(stack: StreamStack) -> None:
    """websockets offers deflate by default, as python-binance's connections do: the compressed arrays and the
    replies (compressed by the protocol, no context takeover) decode."""
    with stack.connect("/market/stream?streams=!markPrice@arr@1s") as ws:
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
        assert recv_json(ws)["stream"] == "!markPrice@arr@1s"
        assert request(ws, "LIST_SUBSCRIPTIONS", rid=7) == {"result": ["!markPrice@arr@1s"], "id": 7}
        assert len(recv_json(ws)["data"]) > 10
