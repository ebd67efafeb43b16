"""The loopback world the consumers live in: fake Binance (WS + REST), the real daemon and API, fake backends."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from volspike_funding.api.server import ServerThread
from volspike_funding.feed.daemon import Daemon
from volspike_funding.fake.backend import FakeBackend, FakeTelegram
from volspike_funding.fake.market import Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.core.settings import Settings, load_settings

from ..conftest import FAST, scaled, wait_until


@dataclass
class Stack:
    market: Market
    ws: FakeBinanceWS
    daemon: Daemon
    daemon_thread: threading.Thread
    api: ServerThread
    state_file: Path

    def stop(self) -> None:
        self.daemon.request_stop()
        self.daemon_thread.join(10)
        self.api.__exit__()
        self.ws.stop()


def start_stack(tmp: Path, n_symbols: int = 30) -> Stack:
    market = Market(n_symbols)
    ws = FakeBinanceWS(market, cadence_s=scaled(0.1)).start()
    settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "BINANCE_WS_URL": ws.url,
                              "FUNDING_STATE_FILE": str(tmp / "state" / "s.json"), **FAST,
                              "FUNDING_STALE_AFTER_S": "5"})
    settings.state_file.parent.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(settings)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    api = ServerThread(settings).__enter__()
    import requests
    wait_until(lambda: requests.get(api.url + "/funding/health", timeout=2).status_code == 200, 15)
    return Stack(market, ws, daemon, thread, api, settings.state_file)


@dataclass
class World:
    stack: Stack
    rest: FakeBinanceRest
    prod: FakeBackend
    dev: FakeBackend
    telegram: FakeTelegram
    tmp: Path

    def settings(self, **env: str) -> Settings:
        base: dict[str, Any] = {
            "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": self.rest.url,
            "WS_FUNDING_API_URL": self.stack.api.url + "/funding", "VOLSPIKE_API_URL": self.prod.url,
            "VOLSPIKE_API_KEY": "prod-secret-key", "VOLSPIKE_API_URL_DEV": self.dev.url,
            "VOLSPIKE_API_KEY_DEV": "dev-secret-key", "TELEGRAM_API_URL": self.telegram.url,
            "TELEGRAM_TOKEN": self.telegram.token, "TELEGRAM_CHAT_ID": "4242",
            "VOLUME_ALERT_STATE_FILE": str(self.tmp / "alerts.json"), "FUNDING_STALE_AFTER_S": "5",
            "OI_UNIVERSE_PUBLISH_S": "0"}  # publishing replaces the fake backend's universe: tested on its own
        base.update(env)
        return load_settings(base)


@contextmanager
def open_world(stack: Stack, tmp: Path) -> Iterator[World]:
    """Fresh fake Binance REST, PROD/DEV backends and Telegram around a running stack, for one test."""
    with FakeBinanceRest(stack.market) as rest, FakeBackend("prod-secret-key") as prod, \
            FakeBackend("dev-secret-key") as dev, FakeTelegram() as telegram:
        yield World(stack, rest, prod, dev, telegram, tmp)
