"""``funding_api_server.py``: serve the daemon's state file over HTTP with uvicorn, loopback only by default.

The listening socket is bound here, before uvicorn starts, so a taken port or a bad address is one line on stderr
and exit code 1 (never uvicorn's own exit code 3); connection limits are :mod:`.api_protocol`'s.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import threading
import time
from types import FrameType
from typing import Sequence

import uvicorn
from fastapi import FastAPI

from volspike_funding.api.app import create_app
from volspike_funding.api.service_status import HealthLimits
from volspike_funding.api.stream_hub import StreamHub
from volspike_funding.store.backend import (MarketReaderLike, StateReaderLike, open_cache,
                                            open_market_cache)
from volspike_funding.core.cli import build_parser, env_file_line, freeze_startup_heap, run, settings_from_args
from volspike_funding.core.logs import setup_logging
from volspike_funding.api.protocol import (MAX_HEAD_BYTES, effective_max_connections, protocol_class, quiet_accept_errors,
                           raise_fd_limit)
from volspike_funding.core.errors import FundingError, SettingsError
from volspike_funding.core.settings import API, Settings, secret_values

log = logging.getLogger("funding.api")
SWITCH_INTERVAL_S = 0.001


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    if is_loopback(settings.api_host):
        return
    if not settings.api_allow_remote:
        raise SettingsError(f"FUNDING_API_HOST: {settings.api_host!r} is not a loopback address; set "
                            "FUNDING_API_ALLOW_REMOTE=true (or --api-allow-remote true) to expose the API")
    log.warning("binding %s: the API is reachable from other machines (FUNDING_API_ALLOW_REMOTE=true)",
                settings.api_host)


def limits(settings: Settings) -> HealthLimits:
    return HealthLimits(settings.stale_after_s, settings.clock_skew_warn_s, settings.max_stale_share,
                        settings.consumer_status_dir)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for ``host`` (``[::1]`` and ``::1`` alike) and ``port``; a clear error if impossible."""
    address = host.strip("[]")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(2048)
    except OSError as exc:
        raise FundingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: StreamHub | None = None) -> None:
        super().__init__(config)
        self.hub = hub

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        quiet_accept_errors(asyncio.get_running_loop())
        if self.hub is not None:
            self.hub.attach(asyncio.get_running_loop())
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.hub is not None:
            self.hub.closing = True
        await super().shutdown(sockets)  # WebSocket subscribers get 1001 "Server restarting" first
        if self.hub is not None:
            self.hub.detach()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Only set the flags: uvicorn re-raises a captured signal after its shutdown, so a SIGTERM the API had
        handled cleanly ended the process by that signal, not with the documented exit code 0."""
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def stream_hub(cache: StateReaderLike, settings: Settings, market: MarketReaderLike | None) -> StreamHub | None:
    """The local WebSocket's hub, fed by the cache's changes (``None`` with FUNDING_WS_ENABLED=false)."""
    if not settings.ws_enabled:
        return None
    hub = StreamHub(cache, settings.stale_after_s, settings.ws_max_connections,
                    int(settings.ws_max_buffer_kb * 1024), market=market,
                    max_buffered_bytes=int(settings.api_max_buffered_mb * 1024 * 1024))
    cache.listeners.append(hub.notify)
    return hub


def server_config(app: FastAPI, settings: Settings, log_level: str, hub: StreamHub | None = None) -> uvicorn.Config:
    fds = raise_fd_limit()
    connections = effective_max_connections(settings.api_max_connections, fds)
    if connections < settings.api_max_connections:
        log.warning("only %d descriptors: at most %d connections (FUNDING_API_MAX_CONNECTIONS %d); raise the unit's "
                    "LimitNOFILE=", fds, connections, settings.api_max_connections)
    # asyncio and h11 explicitly: uvloop/httptools, when installed, would bypass the protocol policy; ws="none":
    # WebSocket upgrades are the protocol's own (api/stream_socket.py), never uvicorn's stack.
    return uvicorn.Config(app, loop="asyncio", http=protocol_class(settings.api_header_timeout_s, connections,
                                                                settings.api_write_timeout_s,
                                                                settings.api_max_buffered_mb, hub,
                                                                hub is not None and hub.market is not None),
                          ws="none", log_level=log_level, access_log=False, server_header=False, proxy_headers=False,
                          timeout_keep_alive=5, h11_max_incomplete_event_size=MAX_HEAD_BYTES, lifespan="off")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("funding_api_server", "Serve funding rates and mark prices from the state file.", API,
                          exit_codes="exit codes: 0 stopped on request (SIGTERM, SIGINT); 1 failed: the address "
                                     "cannot be bound or the server stopped on an error (logged); 2 bad settings or "
                                     "usage.")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, API)
        setup_logging(settings.log_level, secret_values(settings))
        check_bind(settings)
        sock = bind(settings.api_host, settings.api_port)
        log.info("%s", env_file_line(args))  # after the checks: a refused start stays one line
        cache = open_cache(settings).start()
        log.info("serving %s on http://%s:%d (stale after %g s)", cache.location, settings.api_host,
                 settings.api_port, settings.stale_after_s)
        market = open_market_cache(settings)
        hub = stream_hub(cache, settings, market)
        if hub is not None:
            # The watcher threads build the WebSocket frames (~5 ms a second with 700 symbols) while requests wait
            # on the loop: handing the interpreter lock over every 1 ms instead of 5 keeps answers from waiting.
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            log.info("local WebSocket: ws://%s:%d/market/stream?streams=... and /market/ws/<stream> (at most %d "
                     "connections)", settings.api_host, settings.api_port, settings.ws_max_connections)
        try:
            app = create_app(cache, settings.stale_after_s, limits(settings), market, hub)
            server = Server(server_config(app, settings, settings.log_level.lower(), hub), hub)
            freeze_startup_heap()
            server.run(sockets=[sock])
            return 0 if server.started else 1
        finally:
            cache.stop()
            if market is not None:
                market.stop()
            sock.close()

    return run("funding_api_server", body)


class ServerThread:
    """The real app under real uvicorn on an ephemeral loopback port, in a thread: for tests and benchmarks."""

    def __init__(self, settings: Settings, *, poll_s: float = 0.5, port: int = 0) -> None:
        """``port``: 0 for an ephemeral one; a given one lets a test restart the API where its clients are."""
        self.cache = open_cache(settings, poll_s)
        self.sock = bind("127.0.0.1", port)
        self.market = open_market_cache(settings)
        self.hub = stream_hub(self.cache, settings, self.market)
        self.server = Server(server_config(create_app(self.cache, settings.stale_after_s, limits(settings),
                                                      self.market, self.hub), settings, "warning", self.hub),
                             self.hub)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="api-server",
                                        daemon=True)

    def __enter__(self) -> "ServerThread":
        self.cache.start()
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.sock.getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def ws_url(self) -> str:
        """The local WebSocket's base: ``<ws_url>/market/stream?streams=...``."""
        return "ws" + self.url[4:]

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.cache.stop()
        if self.market is not None:
            self.market.stop()
        self.sock.close()
