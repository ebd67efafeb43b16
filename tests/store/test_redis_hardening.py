"""The shared store under the outside attack's findings (issue 20, points 3, 6, 7; issue 23, points 6, 7), each
against a real redis-server: 1M foreign keys, junk and forged daemon statuses, a daemon host whose clock is ahead,
Redis out of memory, symbols delisted while no daemon ran, a FLUSHALL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import load_settings
from volspike_funding.store import daemon_status, reference, statefile
from volspike_funding.store.redis_layout import BEATS, DAEMONS, RECORDS, REFERENCE
from volspike_funding.core.errors import StoreUnavailable
from volspike_funding.store.redis_store import RedisStateWriter

from ..conftest import wait_until
from .test_redis_store import REDIS, RedisServer

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (Debian's redis-server; "
                                                      "scripts/test.sh installs it as root)")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisServer]:
    pytest.importorskip("redis")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def client(store: RedisServer) -> Any:
    import redis

    return redis.Redis.from_url(store.url, socket_timeout=120)


def record(symbol: str, price: float, clock_offset: float = 0.0) -> dict[str, Any]:
    """A record as a daemon whose host clock is ``clock_offset`` seconds off writes it."""
    now = time.time() + clock_offset
    return {"symbol": symbol, "eventTime": int(time.time() * 1000), "markPrice": price, "indexPrice": price,
            "estimatedSettlePrice": price, "fundingRate": 0.0001, "nextFundingTime": 1795507200000,
            "updatedAt": now, "binance": f"{price}|{price}|{price}|0.0001"}


def document(records: dict[str, Any], clock_offset: float = 0.0) -> dict[str, Any]:
    now = time.time() + clock_offset
    connection = {**daemon_status.new_connection_status("wss://x"), "connected": True, "last_connected_time": now}
    return statefile.build_document(records, connection, {}, now=now, heartbeat_s=5, started_at=now - 10)


def api_settings(store: RedisServer, tmp: Path) -> Any:
    return load_settings({"VOLSPIKE_ENV_FILE": str(tmp / "none"), "FUNDING_STORE_URL": store.url,
                          "FUNDING_STATE_FILE": str(tmp / "elsewhere" / "state.json")})


def health(api: ServerThread) -> dict[str, Any]:
    return requests.get(api.url + "/funding/health", timeout=5).json()


def test_a_million_foreign_keys_are_never_scanned(store: RedisServer, tmp_path: Path) -> None:
    redis = client(store)
    redis.eval("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'foreign:' .. i, 'x') end", 0, 1_000_000)
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="d1")
    writer.write(document({"BTCUSDT": record("BTCUSDT", 100.0)}))
    redis.config_resetstat()
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        for price in (101.0, 102.0, 103.0):
            writer.write(document({"BTCUSDT": record("BTCUSDT", price)}))
            wait_until(lambda: requests.get(api.url + "/funding/BTCUSDT", timeout=5).json()["markPrice"] == price, 10)
        assert health(api)["status"] == "healthy"
    stats = redis.info("commandstats")
    assert not {name for name in stats if name in ("cmdstat_scan", "cmdstat_keys")}, stats.keys()


def test_junk_and_forged_daemon_statuses_are_ignored_and_counted(store: RedisServer, tmp_path: Path) -> None:
    redis = client(store)
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="real")
    writer.write(document({"BTCUSDT": record("BTCUSDT", 100.0)}))
    for i in range(64):
        redis.hset(DAEMONS, f"junk{i}", b'{"connection_status": {"connected": false}}')
    # A forged status claiming a heartbeat an hour ahead of the store's clock, for a daemon that does not exist.
    forged = {**document({}), "daemon_id": "forged", "heartbeat_at": time.time() + 3600}
    redis.hset(DAEMONS, "forged", statefile.encode(forged))
    seconds, _ = redis.time()
    redis.hset(BEATS, "forged", (seconds + 3600) * 1000)
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        h = health(api)
        assert h["status"] == "healthy", h["reasons"]
        assert h["daemonsAlive"] == 1 and h["daemonsConnected"] == 1
        assert any("65 daemon status records" in w for w in h["warnings"]), h["warnings"]


def test_the_only_daemon_dead_is_not_kept_alive_by_a_forged_heartbeat(store: RedisServer, tmp_path: Path) -> None:
    redis = client(store)
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="gone")
    writer.write(document({"BTCUSDT": record("BTCUSDT", 100.0)}))
    # The daemon died 60 s ago (its store-stamped heartbeat says so); its status claims a heartbeat in the future.
    seconds, _ = redis.time()
    redis.hset(BEATS, "gone", (seconds - 60) * 1000)
    status = {**document({}), "daemon_id": "gone", "heartbeat_at": time.time() + 90}
    redis.hset(DAEMONS, "gone", statefile.encode(status))
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        h = health(api)
        assert h["daemonAlive"] is False and h["daemonsAlive"] == 0, h


def test_a_daemon_host_ahead_of_the_api_host_is_served(store: RedisServer, tmp_path: Path) -> None:
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="ahead")
    writer.write(document({f"S{i}USDT": record(f"S{i}USDT", 100.0, clock_offset=10.0) for i in range(50)},
                          clock_offset=10.0))
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        batch = requests.get(api.url + "/funding/batch", timeout=5).json()
        assert batch["total"] == 50 and len(batch["data"]) == 50
        ages = [item["ageSeconds"] for item in batch["data"]]
        assert all(0 <= age < 5 for age in ages), ages
        assert health(api)["status"] == "healthy"


def test_redis_out_of_memory_is_named_not_read_as_daemon_stopped(store: RedisServer, tmp_path: Path) -> None:
    redis = client(store)
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="d1")
    writer.write(document({"BTCUSDT": record("BTCUSDT", 100.0)}))
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        assert health(api)["status"] == "healthy"
        seconds, _ = redis.time()
        redis.hset(BEATS, "d1", (seconds - 60) * 1000)  # its last heartbeat long ago: no live status any more
        redis.config_set("maxmemory-policy", "noeviction")
        redis.config_set("maxmemory", "1")
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError|ResponseError"):
            writer.write(document({"BTCUSDT": record("BTCUSDT", 101.0)}))
        h = wait_until(lambda: (h := health(api))["reasons"] and h, 10)
        assert any("refuses writes" in r and "maxmemory" in r for r in h["reasons"]), h["reasons"]
        assert not any("daemon stopped" in r or "daemon not running" in r for r in h["reasons"]), h["reasons"]
        redis.config_set("maxmemory", "0")


def test_symbols_delisted_while_no_daemon_ran_leave_the_store(store: RedisServer, tmp_path: Path) -> None:
    import orjson

    redis = client(store)
    old = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="old")
    old.write(document({"BTCUSDT": record("BTCUSDT", 100.0), "GONEUSDT": record("GONEUSDT", 1.0)}))
    # A new daemon starts after GONEUSDT was delisted: its exchangeInfo lists only BTCUSDT.
    new = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="new")
    info = {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL"}]}
    data = reference.ReferenceData(exchange_info=orjson.dumps(info), exchange_info_at=time.time())
    new.write_reference(orjson.dumps(data.document()), data.symbols)
    assert redis.hkeys(RECORDS) == [b"BTCUSDT"]
    with ServerThread(api_settings(store, tmp_path), poll_s=0.05) as api:
        assert requests.get(api.url + "/funding/GONEUSDT", timeout=5).status_code == 404


def test_reference_data_lost_by_the_store_is_put_back(store: RedisServer) -> None:
    redis = client(store)
    writer = RedisStateWriter(store.url, max_future_ms=300_000, daemon_id="d1")
    writer.write_reference(b'{"exchangeInfo": null}')
    redis.flushall()
    writer.write(document({"BTCUSDT": record("BTCUSDT", 100.0)}))
    assert redis.get(REFERENCE) == b'{"exchangeInfo": null}'
