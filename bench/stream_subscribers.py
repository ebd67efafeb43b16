"""The benchmark subscribers of the local WebSocket, and the floor they are compared with (bench/bench_stream.py).

:func:`subscribers` is one process's share of the subscribers, each a raw socket read by a :class:`Reader`, which
takes the kernel's receive time of every frame. :func:`floor_server` speaks just enough of the same protocol to
the same subscribers: it sends each one a frame of the same shape and size as the API's, made once per second
and stamped as it is made, with plain ``send()`` calls from one Python thread and nothing else. Its
delivery figures are what any Python server on this host pays for the fan-out alone, the part of a goal that no
change of ours can take away.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
import zlib
from typing import Any

from volspike_funding.api.stream_frames import deflate_blocks, deflated_frame, ws_text_frame
from volspike_funding.fake.market import Market


class Reader:
    """A subscriber that costs next to nothing and is timed by the kernel: it splits the byte stream into
    WebSocket frames by their headers, reads only each message's first event time, and takes the kernel's receive
    timestamp of the bytes that completed the frame (``SO_TIMESTAMPNS``), so the figure is when the service
    delivered the frame, not when this busy process got round to it. A compressed message (RSV1, when the
    subscriber offered permessage-deflate) is kept whole and inflated to find its event time."""

    def __init__(self, sock: socket.socket, out: list[tuple[int, float]]) -> None:
        self.sock, self.out = sock, out
        self.buf = b""  # a partial handshake or frame header
        self.skip = 0  # payload bytes of the current frame still to come
        self.stamp: int | None = None
        self.handshake = True
        self.counting = False
        self.compressed: list[bytes] | None = None  # the current frame's bytes, when it is compressed
        self.frames = self.deflated = 0

    def done(self, at_ms: float) -> None:
        self.frames += 1
        if self.compressed is not None:
            self.deflated += 1
            text = zlib.decompressobj(-15).decompress(b"".join(self.compressed) + b"\x00\x00\xff\xff", 200)
            self.compressed = None
            at = text.find(b'"E":')
            digits = text[at + 4:at + 17] if at >= 0 else b""
            self.stamp = int(digits) if digits.isdigit() else None
        if self.stamp is not None and self.counting:
            self.out.append((self.stamp, at_ms))

    def readable(self) -> None:
        data, ancillary, _, _ = self.sock.recvmsg(1 << 20, 64)
        at_ms = time.time() * 1000
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanos = struct.unpack("qq", value[:16])
                at_ms = seconds * 1000 + nanos / 1e6
        buf = self.buf + data if self.buf else data
        if self.handshake:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            buf, self.handshake = buf[end + 4:], False
        pos, size_all = 0, len(buf)
        while True:
            if self.skip:
                take = min(self.skip, size_all - pos)
                if self.compressed is not None:
                    self.compressed.append(buf[pos:pos + take])
                self.skip -= take
                pos += take
                if self.skip:
                    break
                self.done(at_ms)
                continue
            if size_all - pos < 2:
                break
            short = buf[pos + 1] & 0x7F
            head = 2 + (2 if short == 126 else 8 if short == 127 else 0)
            if size_all - pos < head:
                break
            size = short if short < 126 else int.from_bytes(buf[pos + 2:pos + head], "big")
            if buf[pos] & 0x40:
                self.compressed, self.stamp = [], None
                pos += head
                self.skip = size
                continue
            peek = min(size, 120)
            if size_all - pos < head + peek:
                break
            prefix = buf[pos + head:pos + head + peek]
            at = prefix.find(b'"E":')
            digits = prefix[at + 4:at + 17] if at >= 0 else b""
            self.stamp = int(digits) if digits.isdigit() else None
            pos += head
            self.skip = size
            if not size:
                self.done(at_ms)
        self.buf = buf[pos:]


#: Linux's SO_TIMESTAMPNS (the socket module does not name it).
SO_TIMESTAMPNS = 35
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"  # ccxt's and npm ws's offer


def subscribers(port: int, streams: list[str], seconds: float, deflate: bool, pipe: Any) -> None:
    """One process's share of the subscribers: raw sockets, a handshake each (offering permessage-deflate or
    not), then :class:`Reader` per socket."""
    out: dict[str, list[tuple[int, float]]] = {"all": [], "symbol": []}
    selector = selectors.DefaultSelector()
    readers = []
    for stream in streams:
        path = f"/market/stream?streams={stream}" if stream.startswith("!") else f"/market/ws/{stream}"
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     f"{OFFER if deflate else ''}\r\n".encode())
        sock.setblocking(False)
        reader = Reader(sock, out["all" if stream.startswith("!") else "symbol"])
        readers.append(reader)
        selector.register(sock, selectors.EVENT_READ, reader)

    def pump(until: float) -> None:
        while time.monotonic() < until:
            for key, _ in selector.select(0.1):
                key.data.readable()

    pump(time.monotonic() + 3)
    pipe.send("connected")
    while not pipe.poll():
        pump(time.monotonic() + 0.05)
    pipe.recv()
    for reader in readers:
        reader.counting = True
    pump(time.monotonic() + seconds)
    for reader in readers:
        reader.counting = False
    pipe.send((out, sum(r.frames for r in readers), sum(r.deflated for r in readers)))
    while not pipe.poll():  # still subscribed (and reading) while the HTTP figures are taken
        pump(time.monotonic() + 0.05)
    for reader in readers:
        reader.sock.close()


def start_subscribers(spawn: Any, port: int, streams: list[str], procs: int, seconds: float,
                      deflate: bool) -> list[tuple[Any, Any]]:
    """:func:`subscribers` for ``streams`` in ``procs`` processes, each with its pipe, once all are connected;
    they start counting at ``"go"``."""
    started: list[tuple[Any, Any]] = []
    for i in range(procs):
        mine, theirs = spawn.Pipe()
        proc = spawn.Process(target=subscribers, args=(port, streams[i::procs], seconds, deflate, theirs),
                             daemon=True)
        proc.start()
        started.append((proc, mine))
    for _, pipe in started:
        assert pipe.recv() == "connected"
    return started

def floor_server(symbols: int, pipe: Any) -> None:
    """Accept ``pipe.recv()`` subscribers, answer each handshake, then once a second stamp a fresh all-market
    frame (the fake's ``!markPrice@arr@1s``, ~120 KB) and a one-row frame, compress the big one once for the
    subscribers that offered permessage-deflate, and send every subscriber its frame, the one-row frames first;
    until told to stop. Filling in the stamp and compressing take ~1 ms of the figure."""
    market = Market(symbols)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    pipe.send(server.getsockname()[1])
    targets: list[tuple[socket.socket, bool, bool]] = []  # (socket, all-market, compressed)
    for _ in range(pipe.recv()):
        sock, _ = server.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        targets.append((sock, b"streams=!" in head, b"permessage-deflate" in head))
    targets.sort(key=lambda target: target[1])  # the per-symbol frames first, as the hub sends them
    pipe.send("accepted")
    while not pipe.poll(1.0):
        market.step()
        text = market.frame(1_790_000_000_000).encode().replace(b'"E":1790000000000', b'"E":%d')
        row = text[text.index(b"[") + 1:text.index(b"}") + 1]
        event = int(time.time() * 1000)
        big = text % ((event,) * text.count(b"%d"))
        frames = {(True, False): ws_text_frame(big), (False, False): ws_text_frame(row % event),
                  (True, True): deflated_frame(deflate_blocks(big))}
        for sock, whole, compressed in targets:
            sock.sendall(frames[whole, compressed and whole])
    for sock, _, _ in targets:
        sock.close()
    server.close()
