"""``funding_api_server.py``: serve the daemon's state file over HTTP with uvicorn, loopback only by default."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Sequence

import uvicorn

from .api_app import HealthLimits, create_app
from .api_state import StateCache
from .cli import build_parser, run, settings_from_args, setup_logging
from .errors import SettingsError
from .settings import API, Settings

log = logging.getLogger("funding.api")


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
    return HealthLimits(settings.stale_after_s, settings.clock_skew_warn_s, settings.max_stale_share)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("funding_api_server", "Serve funding rates and mark prices from the state file.", API)

    def body() -> int:
        settings = settings_from_args(parser.parse_args(argv), API)
        setup_logging(settings.log_level)
        check_bind(settings)
        cache = StateCache(settings.state_file, reference_path=settings.reference_path).start()
        log.info("serving %s on http://%s:%d (stale after %g s)", settings.state_file, settings.api_host,
                 settings.api_port, settings.stale_after_s)
        try:
            config = uvicorn.Config(create_app(cache, settings.stale_after_s, limits(settings)), host=settings.api_host,
                                    port=settings.api_port, log_level=settings.log_level.lower(),
                                    access_log=False, server_header=False, proxy_headers=False)
            server = uvicorn.Server(config)
            server.run()
            return 0 if server.started else 1
        finally:
            cache.stop()

    return run("funding_api_server", body)


class ServerThread:
    """The real app under real uvicorn on an ephemeral loopback port, in a thread: for tests and benchmarks."""

    def __init__(self, settings: Settings, *, poll_s: float = 0.5) -> None:
        self.cache = StateCache(settings.state_file, poll_s=poll_s, reference_path=settings.reference_path)
        config = uvicorn.Config(create_app(self.cache, settings.stale_after_s, limits(settings)), host="127.0.0.1",
                                port=0,
                                log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

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
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.cache.stop()
