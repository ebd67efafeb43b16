"""The market feed's document through the shared store (issue 21): a daemon's market child writes it to Redis, an
API on another "host" (no market file) serves klines from it; of two writers the freshest feed wins."""

from __future__ import annotations

import json
import threading
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
from volspike_funding.store.redis_layout import MARKET, MARKET_META
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


def test_an_unchanged_document_is_not_fetched_again(redis_server: RedisServer) -> None:  # noqa: F811
    import redis

    tickers = {f"S{i}USDT": {"symbol": f"S{i}USDT", "quoteVolume": "12345.678"} for i in range(2000)}
    writer = RedisMarketWriter(redis_server.url)
    size = writer.write({"lastFrameAt": time.time(), "connected": True, "klines": {}, "tickers": tickers})
    server = redis.Redis.from_url(redis_server.url)

    def sent() -> int:
        return int(server.info("stats")["total_net_output_bytes"])

    cache = RedisMarketCache(redis_server.url, read_every_s=0.02)
    try:
        wait_until(lambda: cache.fetches == 1, 5)
        before, reads = sent(), cache.reads
        wait_until(lambda: cache.reads >= reads + 10, 10)
        assert cache.fetches == 1 and cache.get().tickers == tickers
        assert sent() - before < size / 10  # ten polls and the INFO calls: less than a tenth of one document
        writer.write({"lastFrameAt": time.time(), "connected": True, "klines": {}, "tickers": {"B": {}}})
        wait_until(lambda: cache.get().tickers == {"B": {}}, 5)
        assert cache.fetches == 2
        # The store restarted empty and a new daemon process writes again: a new version, read at once.
        server.flushall()
        RedisMarketWriter(redis_server.url).write({"lastFrameAt": time.time(), "connected": True, "klines": {},
                                                   "tickers": {"C": {}}})
        wait_until(lambda: cache.get().tickers == {"C": {}}, 5)
    finally:
        cache.stop()


class Feeding:
    """A daemon host whose clock is ``offset`` s off Redis's, writing its market document every 0.1 s as the
    market child does, its last ``!ticker@arr`` frame ``frame_age`` s ago by that clock (``stalled``: the frame
    time stays where it was at the start, so the feed's age grows)."""

    def __init__(self, url: str, offset: float, frame_age: float, stalled: bool = False) -> None:
        self.clock = lambda: time.time() + offset
        self.writer = RedisMarketWriter(url, clock=self.clock)
        self.frame_age, self.first = frame_age, self.clock() - frame_age
        self.stalled = stalled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def document(self) -> dict[str, Any]:
        frame = self.first if self.stalled else self.clock() - self.frame_age
        return {"writtenAt": self.clock(), "lastFrameAt": frame, "connected": True, "klines": {},
                "tickers": {"BTCUSDT": {"symbol": "BTCUSDT", "quoteVolume": "1.5", "E": int(frame * 1000)}}}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.writer.write(self.document())
            self._stop.wait(0.1)

    def __enter__(self) -> "Feeding":
        self.writer.write(self.document())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def ticker(api: ServerThread) -> tuple[int, float | None]:
    try:
        with urllib.request.urlopen(api.url + "/fapi/v1/ticker/24hr?symbol=BTCUSDT", timeout=scaled(5)) as answer:
            return answer.status, float(answer.headers["X-Data-Age-Seconds"])
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.mark.parametrize("offset", [10.0, -10.0])
def test_the_feed_age_is_true_when_the_daemon_host_clock_is_off(
        redis_server: RedisServer, make_settings: Callable[..., Settings], offset: float) -> None:  # noqa: F811
    """Ages cross hosts in the store's clock: a daemon host 10 s ahead must not make a stalled feed look fresh
    (its frames "from the future"), nor one 10 s behind make a live feed look stale."""
    import redis

    stale = scaled(5)
    settings = make_settings(FUNDING_STORE_URL=redis_server.url, FUNDING_MARKET_ENABLED="true",
                             FUNDING_STALE_AFTER_S=f"{stale:g}")
    with ServerThread(settings) as api:
        with Feeding(redis_server.url, offset, frame_age=1.0):  # live: its last frame a second ago
            status, age = wait_until(lambda: (got := ticker(api))[0] == 200 and got, 10)
            assert age is not None and 0.5 <= age < stale, age
        redis.Redis.from_url(redis_server.url).delete(MARKET, MARKET_META)  # the live feed's document must not stay
        with Feeding(redis_server.url, offset, frame_age=stale + 3, stalled=True):  # its frames stopped
            wait_until(lambda: ticker(api)[0] == 503, 10)
            time.sleep(scaled(0.5))  # a few reads later, still
            assert ticker(api)[0] == 503


def test_a_daemon_host_ahead_does_not_win_with_an_older_feed(redis_server: RedisServer) -> None:  # noqa: F811
    ahead = RedisMarketWriter(redis_server.url, clock=lambda: time.time() + 10)
    honest = RedisMarketWriter(redis_server.url)
    cache = RedisMarketCache(redis_server.url, read_every_s=0.02)
    try:
        ahead.write({"lastFrameAt": time.time() + 10 - 3, "connected": True, "klines": {}, "tickers": {"A": {}}})
        honest.write({"lastFrameAt": time.time() - 0.5, "connected": True, "klines": {}, "tickers": {"B": {}}})
        # Its feed stalled 3 s ago: by its clock that is 7 s after the honest daemon's last frame, by the store's 2.5 s
        # before it.
        ahead.write({"lastFrameAt": time.time() + 10 - 3, "connected": True, "klines": {}, "tickers": {"A": {}}})
        wait_until(lambda: cache.fetches >= 1, 5)
        reads = cache.reads
        wait_until(lambda: cache.reads >= reads + 3, 5)
        assert cache.get().tickers == {"B": {}}
        age = cache.get().feed_age(time.time())
        assert age is not None and 0.4 <= age < scaled(5), age
    finally:
        cache.stop()
