"""The market feed's document through the shared store (issue 21): a daemon's market child writes it to Redis, an
API on another "host" (no market file) serves klines from it; of two writers the freshest feed wins."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import Settings
from volspike_funding.fake.market import Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.store import marketfile
from volspike_funding.store.redis_market import RedisMarketCache, RedisMarketWriter

from ..conftest import DaemonThread, scaled, wait_until
from .test_redis_store import REDIS, RedisServer, redis_server  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian's redis-server; "
                                                      "scripts/test.sh installs it as root)")


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_api_without_a_market_file_serves_klines_from_the_shared_store(
        redis_server: RedisServer, make_settings: Callable[..., Settings],  # noqa: F811
        tmp_path: Path) -> None:
    market = Market(30)
    with FakeBinanceWS(market, cadence_s=scaled(0.1)) as ws, FakeBinanceRest(market) as rest:
        rest.market_candles = True
        common = {"FUNDING_STORE_URL": redis_server.url, "FUNDING_MARKET_ENABLED": "true",
                  "FUNDING_REFERENCE_ENABLED": "true", "BINANCE_WS_URL": ws.url, "BINANCE_REST_URL": rest.url,
                  "FUNDING_MARKET_WS_URL": ws.market_url, "FUNDING_STALE_AFTER_S": "5"}
        daemon_settings = make_settings(**common)
        daemon_settings.state_file.parent.mkdir(parents=True)  # its reference file's place (the state is in Redis)
        d = DaemonThread(daemon_settings)
        d.thread.start()
        # The API's host: its own state path, where no market file will ever be.
        api_settings = make_settings(**common, FUNDING_STATE_FILE=str(tmp_path / "other-host" / "state.json"))
        with ServerThread(api_settings) as api:
            def served() -> bool:
                status, rows = get(api.url + "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=2")
                return status == 200 and len(rows) == 2
            wait_until(served, 30)
            status, ticker = get(api.url + "/fapi/v1/ticker/24hr?symbol=ETHUSDT")
            assert status == 200 and float(ticker["quoteVolume"]) > 0
        assert not marketfile.market_path(api_settings.state_file, None).exists()
        assert not marketfile.market_path(d.settings.state_file, None).exists()  # nor on the daemon's host
        d.stop()


def test_of_two_writers_the_freshest_feed_wins(redis_server: RedisServer) -> None:  # noqa: F811
    a, b = RedisMarketWriter(redis_server.url), RedisMarketWriter(redis_server.url)
    cache = RedisMarketCache(redis_server.url, read_every_s=0.05)
    try:
        assert "not read" in (cache.get().error or "") or "no market data" in (cache.get().error or "")
        now = time.time()
        a.write({"lastFrameAt": now, "connected": True, "klines": {}, "tickers": {"A": {}}})
        b.write({"lastFrameAt": now - 30, "connected": True, "klines": {}, "tickers": {"B": {}}})  # stalled feed
        wait_until(lambda: cache.get().tickers == {"A": {}}, 5)
        time.sleep(0.2)
        assert cache.get().tickers == {"A": {}}  # b's older feed did not replace it
        b.write({"lastFrameAt": now + 1, "connected": True, "klines": {}, "tickers": {"B": {}}})
        wait_until(lambda: cache.get().tickers == {"B": {}}, 5)
    finally:
        cache.stop()


def test_a_store_that_goes_away_leaves_the_last_document_ageing_honestly(redis_server: RedisServer) -> None:  # noqa: F811
    RedisMarketWriter(redis_server.url).write({"lastFrameAt": time.time(), "connected": True, "klines": {},
                                               "tickers": {"A": {}}})
    cache = RedisMarketCache(redis_server.url, read_every_s=0.05)
    try:
        wait_until(lambda: cache.get().error is None, 5)
        redis_server.stop()
        time.sleep(0.5)
        snap = cache.get()
        assert snap.error is None and snap.tickers == {"A": {}}  # served on, its feed age growing (then 503)
    finally:
        cache.stop()
