"""A fake Binance USDⓈ-M WebSocket server on loopback, with fault injection, for tests, benchmarks and the demo.

Paths served like Binance's since 2026-04-23:

- ``/market/stream?streams=!markPrice@arr@1s`` — combined stream, frames wrapped in ``{"stream", "data"}``;
- ``/market/ws/!markPrice@arr@1s`` — raw stream, bare arrays;
- ``/market/stream?streams=<symbol>@markPrice@1s/...`` — per-symbol streams, one wrapped object per symbol;
- ``/market/stream?streams=!ticker@arr`` — the 24 h tickers every tick, and ``<symbol>@kline_1h`` streams (added by
  ``SUBSCRIBE``): the open candle every tick, the final ``"x":true`` one :attr:`FakeBinanceWS.final_delay_s` after
  the close (candles: :class:`.market.Candles`, the same the REST fake answers);
- ``/stream?...`` and ``/ws/...`` — the legacy paths: the handshake succeeds and nothing is ever sent.

``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}`` on an open connection changes its streams and
is answered ``{"result": null, "id": n}`` (or refused: :attr:`FakeBinanceWS.subscribe_answer`). Binance's documented limits are enforced: more than 10 incoming
messages in a second, or more than 1024 streams, closes the connection (1008).

Faults are methods on :class:`FakeBinanceWS`, safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from .market import Market

STREAM = "!markPrice@arr@1s"
TICKERS = "!ticker@arr"
HOUR_MS = 3_600_000
MAX_STREAMS = 1024
MAX_INCOMING_PER_S = 10


class FakeBinanceWS:
    def __init__(self, market: Market | None = None, *, cadence_s: float = 1.0, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.market = market or Market()
        self.cadence_s = cadence_s
        self._host, self._port = host, port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-binance-ws", daemon=True)
        self._server: Server | None = None
        self._ticker_task: asyncio.Task[None]
        self._tick = 0
        self._frame_ready: asyncio.Event | None = None
        self._frames: tuple[str, str] = ("", "")
        self.connections: set[ServerConnection] = set()
        # Fault switches, read by the serving coroutines.
        self.stalled = False
        self.refuse: list[tuple[int, float | None, str | None]] = []
        self.max_connection_age_s: float | None = None
        self.ping_interval_s: float | None = None
        #: While true, a SUBSCRIBE is answered by closing the connection (Binance's answer to a rate breach).
        self.close_on_subscribe = False
        #: How a SUBSCRIBE is answered: ``"result"`` (``{"result": null, "id": n}``, streams added), ``"error"``
        #: (``{"error": {"code": 2, "msg": ...}, "id": n}``, nothing added) or ``"none"`` (no reply, nothing added).
        self.subscribe_answer = "result"
        self._garbage: list[str | bytes] = []
        #: Seconds after an hour's close its final kline message (``"x":true``) is sent (Binance: ~2 s), and the
        #: symbols that never get one.
        self.final_delay_s = 2.0
        self.drop_finals: set[str] = set()
        #: The 24 h tickers go out every this many ticks (a benchmark pushes klines 4 times a second and tickers
        #: once, as Binance does).
        self.ticker_every = 1
        # What happened, for assertions.
        self.stats: dict[str, int] = {"connections": 0, "refused": 0, "frames_sent": 0, "pings": 0,
                                      "pongs": 0, "cuts": 0, "legacy_connections": 0, "subscribe_messages": 0,
                                      "limit_closes": 0, "subscribe_closes": 0,
                                      "kline_messages": 0}
        #: Streams of each open connection (lower-case names, as Binance wants them).
        self.streams: dict[ServerConnection, set[str]] = {}
        self.paths: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "FakeBinanceWS":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._frame_ready = asyncio.Event()
        self._server = await serve(self._serve, self._host, self._port, process_request=self._process_request,
                                   ping_interval=None, max_size=None, compression=None)
        self._port = self._server.sockets[0].getsockname()[1]
        self._make_frames()
        self._ticker_task = asyncio.get_running_loop().create_task(self._ticker())

    def stop(self) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()  # the ticker keeps running so that every handler notices its close
                await self._server.wait_closed()
            self._ticker_task.cancel()
        try:
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()  # its self-pipe sockets, which GC would otherwise report in a later test

    def __enter__(self) -> "FakeBinanceWS":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"{self.base}/market/stream?streams={STREAM}"

    @property
    def market_url(self) -> str:
        """The market feed's URL (klines are added by SUBSCRIBE)."""
        return f"{self.base}/market/stream?streams={TICKERS}"

    @property
    def raw_url(self) -> str:
        return f"{self.base}/market/ws/{STREAM}"

    @property
    def legacy_url(self) -> str:
        return f"{self.base}/stream?streams={STREAM}"

    # -- faults ------------------------------------------------------------------------------------------
    def refuse_handshakes(self, status: int, count: int = 1, retry_after: float | None = None,
                          only: str | None = None) -> None:
        """Answer the next ``count`` handshakes with an HTTP error (429, 503, ...); ``only``: those whose path
        contains it (``"!ticker@arr"``: the market feed's), the others are served."""
        self.refuse.extend([(status, retry_after, only)] * count)

    def send_garbage(self, *frames: str | bytes) -> None:
        """Send these frames to every open connection at the next tick, before the real frame."""
        self._garbage.extend(frames)

    def drop_all(self, only: str | None = None) -> None:
        """Abrupt close: the TCP connections vanish without a WebSocket close frame; ``only``: those carrying a
        stream of that name."""
        def _drop() -> None:
            for conn in list(self.connections):
                if only is None or only.lower() in self.streams.get(conn, set()):
                    conn.transport.abort()
        self._loop.call_soon_threadsafe(_drop)

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    # -- serving -----------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        refusal = next((r for r in self.refuse if r[2] is None or r[2] in request.path), None)
        if refusal is not None:
            self.refuse.remove(refusal)
            status, retry_after, _ = refusal
            self.stats["refused"] += 1
            response = connection.respond(status, "refused by fake exchange\n")
            if retry_after is not None:
                response.headers["Retry-After"] = f"{retry_after:g}"
            return response
        path = urlsplit(request.path).path
        if not (path.startswith(("/market/", "/stream", "/ws/"))):
            return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
        return None

    def _make_frames(self) -> None:
        now_ms = int(time.time() * 1000)
        self._frames = (self.market.frame(now_ms), self.market.frame(now_ms, stream=None))

    async def _ticker(self) -> None:
        assert self._frame_ready is not None
        while True:
            await asyncio.sleep(self.cadence_s)
            self.market.step()
            self._make_frames()
            self._tick += 1
            self._frame_ready.set()
            self._frame_ready = asyncio.Event()

    async def _serve(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        parts = urlsplit(conn.request.path)
        if not parts.path.startswith("/market/"):
            self.stats["legacy_connections"] += 1
            await conn.wait_closed()  # the legacy endpoints: connection accepted, nothing ever sent
            return
        wrapped = parts.path == "/market/stream"
        if wrapped:
            names = parse_qs(parts.query).get("streams", [""])[0].split("/")
        else:
            names = [parts.path.removeprefix("/market/ws/")]
        streams = {n if n.startswith("!") else n.lower() for n in names if n}
        if not any("markprice" in n.lower() or n == TICKERS or "@kline_" in n for n in streams):
            await conn.wait_closed()
            return
        self.connections.add(conn)
        self.streams[conn] = streams
        self.stats["connections"] += 1
        reader = asyncio.get_running_loop().create_task(self._read(conn, streams))
        opened = last_ping = time.monotonic()
        finals_for = self.market.candles.now_ms() // HOUR_MS * HOUR_MS  # hours closing from now get a final
        try:
            while True:
                assert self._frame_ready is not None
                await self._frame_ready.wait()
                if conn.state is not State.OPEN:
                    return
                now = time.monotonic()
                if self.max_connection_age_s is not None and now - opened >= self.max_connection_age_s:
                    self.stats["cuts"] += 1
                    await conn.close(1000, "24h connection limit")  # Binance's daily cut, compressed
                    return
                if self.ping_interval_s is not None and now - last_ping >= self.ping_interval_s:
                    last_ping = now
                    asyncio.get_running_loop().create_task(self._ping(conn))
                if self.stalled:
                    continue
                while self._garbage:
                    await conn.send(self._garbage.pop(0))
                if STREAM in streams:
                    await conn.send(self._frames[0] if wrapped else self._frames[1])
                    self.stats["frames_sent"] += 1
                now_ms = int(time.time() * 1000)
                for name in sorted(n for n in streams - {STREAM} if "@markprice" in n):
                    frame = self.market.symbol_frame(self._symbol_of(name), now_ms, wrapped)
                    if frame is not None:
                        await conn.send(frame)
                finals_for = await self._market_streams(conn, streams, finals_for)
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            self.connections.discard(conn)
            self.streams.pop(conn, None)

    async def _market_streams(self, conn: ServerConnection, streams: set[str], finals_for: int) -> int:
        """The 24 h tickers, and each kline stream's open candle (none for a quiet symbol); the final ``x:true``
        of an hour :attr:`final_delay_s` after its close, unless the symbol is in :attr:`drop_finals`. Returns
        the open time of the next hour owed a final."""
        candles = self.market.candles
        now_ms = candles.now_ms()
        if TICKERS in streams and self._tick % self.ticker_every == 0:
            await conn.send(candles.tickers_frame(now_ms))
        klines = sorted(self._symbol_of(n) for n in streams if n.endswith("@kline_1h"))
        due = now_ms >= finals_for + HOUR_MS + self.final_delay_s * 1000
        for symbol in klines:
            if symbol in candles.quiet or self.market.find(symbol) is None:
                continue
            if due and symbol not in self.drop_finals:
                await conn.send(candles.message(symbol, finals_for, now_ms, True))
            await conn.send(candles.message(symbol, now_ms // HOUR_MS * HOUR_MS, now_ms, False))
            self.stats["kline_messages"] += 1
        return finals_for + HOUR_MS if due else finals_for

    def _symbol_of(self, stream: str) -> str:
        lower = stream.split("@")[0]
        return next((s for s in self.market.listed() if s.lower() == lower), lower.upper())

    async def _read(self, conn: ServerConnection, streams: set[str]) -> None:
        """Requests from the client: (UN)SUBSCRIBE, within Binance's limits."""
        window_start, in_window = time.monotonic(), 0
        try:
            async for message in conn:
                now = time.monotonic()
                if now - window_start >= 1.0:
                    window_start, in_window = now, 0
                in_window += 1
                if in_window > MAX_INCOMING_PER_S:
                    self.stats["limit_closes"] += 1
                    await conn.close(1008, "Too many requests")
                    return
                try:
                    request = json.loads(message)
                    method, params, request_id = request["method"], request.get("params", []), request["id"]
                except (ValueError, KeyError, TypeError):
                    await conn.send(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
                    continue
                self.stats["subscribe_messages"] += 1
                names = {p if p.startswith("!") else p.lower() for p in params if isinstance(p, str)}
                if method == "SUBSCRIBE" and self.close_on_subscribe:
                    self.stats["subscribe_closes"] += 1
                    await conn.close(1008, "Too many requests")
                    return
                if method == "SUBSCRIBE" and self.subscribe_answer != "result":
                    if self.subscribe_answer == "error":
                        await conn.send(json.dumps({"error": {"code": 2, "msg": "Invalid request: too many "
                                                              "parameters"}, "id": request_id}))
                    continue
                if method == "SUBSCRIBE":
                    streams |= names
                elif method == "UNSUBSCRIBE":
                    streams -= names
                if len(streams) > MAX_STREAMS:
                    self.stats["limit_closes"] += 1
                    await conn.close(1008, f"more than {MAX_STREAMS} streams")
                    return
                await conn.send(json.dumps({"result": None, "id": request_id}))
        except ConnectionClosed:
            pass

    async def _ping(self, conn: ServerConnection) -> None:
        self.stats["pings"] += 1
        try:
            waiter = await conn.ping()
            await asyncio.wait_for(waiter, timeout=10)
            self.stats["pongs"] += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
