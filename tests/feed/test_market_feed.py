"""The market feed end to end: the real daemon's second connection against the fake exchange's kline and ticker
streams, REST backfill within its budget, the market file, and the API's Binance-shaped klines and tickers."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import Settings
from volspike_funding.fake.market import Market
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.store import marketfile

from ..conftest import DaemonThread, scaled, wait_until, within_one_hour


@pytest.fixture
def market() -> Market:
    return Market(30)


@pytest.fixture
def fakes(market: Market) -> Iterator[tuple[FakeBinanceWS, FakeBinanceRest]]:
    with FakeBinanceWS(market, cadence_s=scaled(0.1)) as ws, FakeBinanceRest(market) as rest:
        rest.market_candles = True
        yield ws, rest


@pytest.fixture
def market_settings(make_settings: Callable[..., Settings], fakes: tuple[FakeBinanceWS, FakeBinanceRest]
                    ) -> Callable[..., Settings]:
    ws, rest = fakes

    def make(**env: str) -> Settings:
        return make_settings(**{"FUNDING_REFERENCE_ENABLED": "true", "BINANCE_WS_URL": ws.url,
                                "BINANCE_REST_URL": rest.url, "FUNDING_MARKET_ENABLED": "true",
                                "FUNDING_MARKET_WS_URL": ws.market_url, **env})
    return make


def market_doc(settings: Settings) -> dict[str, Any]:
    snap = marketfile.read(marketfile.market_path(settings.state_file, settings.market_file))
    return snap.document


def served(settings: Settings) -> bool:
    doc = market_doc(settings)
    klines = doc.get("klines") or {}
    return bool(klines) and all(e["since"] is not None and len(e["rows"]) >= 26 for e in klines.values())


def get(base: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(base + path, timeout=scaled(5)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_klines_and_tickers_are_served_like_binance(run_daemon: Callable[[Settings], DaemonThread],
                                                     market_settings: Callable[..., Settings],
                                                     fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    within_one_hour(20)
    settings = market_settings()
    d = run_daemon(settings)
    wait_until(lambda: served(settings), 30)
    doc = market_doc(settings)
    assert set(doc["klines"]) == set(rest.market.usdt_perpetuals())
    assert doc["counters"]["coin_m_rows"] > 0 and "BTCUSD_PERP" not in doc["tickers"]
    # One backfill call per symbol at weight 1 (limit 27): the history, never more.
    assert doc["backfill"]["totalWeight"] == len(doc["klines"])
    with ServerThread(settings) as api:
        status, rows = get(api.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=3")
        assert status == 200 and len(rows) == 3 and all(len(r) == 12 for r in rows)
        status, truth = get(rest.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=3")
        assert rows[:2] == truth[:2]  # closed hours: exactly Binance's rows, decimals as sent
        assert rows[2][0] == truth[2][0] and rows[2][1] == truth[2][1]  # the open hour (its volume grows)
        status, body = get(api.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1h")
        assert status == 400 and body["code"] == -1020 and "only the last 27" in body["msg"]
        status, body = get(api.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=5m&limit=2")
        assert status == 400 and body["code"] == -1020
        status, body = get(api.url, "/fapi/v1/klines?symbol=NOPEUSDT&interval=1h&limit=2")
        assert status == 400 and body["code"] == -1020
        status, ticker = get(api.url, "/fapi/v1/ticker/24hr?symbol=ETHUSDT")
        assert status == 200 and list(ticker) == ["symbol", "priceChange", "priceChangePercent", "weightedAvgPrice",
                                                  "lastPrice", "lastQty", "openPrice", "highPrice", "lowPrice",
                                                  "volume", "quoteVolume", "openTime", "closeTime", "firstId",
                                                  "lastId", "count"]
        status, tickers = get(api.url, "/fapi/v1/ticker/24hr")
        assert status == 200 and {t["symbol"] for t in tickers} == set(doc["klines"])
    d.stop()


def test_a_stalled_market_feed_reconnects_without_touching_mark_prices(
        run_daemon: Callable[[Settings], DaemonThread], market_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    settings = market_settings(FUNDING_NO_DATA_TIMEOUT_S=f"{scaled(1.0):g}")
    d = run_daemon(settings)
    wait_until(lambda: served(settings), 30)
    market_conn = [c for c in ws.streams if "!ticker@arr" in ws.streams[c]]
    assert len(market_conn) == 1
    updates = d.doc()["counters"]["updates"]
    ws.stalled = True  # nothing on any connection: the market feed's own watchdog fires
    wait_until(lambda: market_doc(settings)["counters"]["reconnects"] >= 1, 10)
    ws.stalled = False
    ws.drop_all()  # then both connections vanish: each comes back on its own
    wait_until(lambda: market_doc(settings)["counters"]["reconnects"] >= 2 and served(settings), 30)
    wait_until(lambda: d.doc()["connection_status"]["connected"] and d.doc()["counters"]["updates"] > updates, 10)
    d.stop()
    assert market_doc(settings)["connected"] is False and market_doc(settings)["reason"] == "daemon stopping"


def test_backfill_keeps_to_its_budget_and_survives_429(run_daemon: Callable[[Settings], DaemonThread],
                                                        market_settings: Callable[..., Settings],
                                                        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    rest.fail("/fapi/v1/klines", 429, 1, headers={"Retry-After": "1"})
    settings = market_settings(FUNDING_KLINE_BACKFILL_WEIGHT_PER_MIN="5")
    d = run_daemon(settings)
    wait_until(lambda: market_doc(settings).get("backfill", {}).get("lastError"), 20)
    wait_until(lambda: market_doc(settings)["backfill"]["totalWeight"] >= 5, 20)
    doc = market_doc(settings)
    assert "429" in doc["backfill"]["lastError"]
    # Within this minute at most the budget (a minute boundary may fall inside the test: two minutes' worth).
    assert doc["backfill"]["totalWeight"] <= 10 and rest.counts.get("/fapi/v1/klines", 0) <= 10
    assert doc["backfill"]["pending"] > 0  # the rest waits for the next minutes, nothing is dropped
    d.stop()


def test_backfill_banned_with_418_asks_nothing_until_retry_after_says_so_and_mark_prices_flow_on(
        run_daemon: Callable[[Settings], DaemonThread], market_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    ban = math.ceil(scaled(3))  # Retry-After is whole seconds
    rest.fail("/fapi/v1/klines", 418, 1, headers={"Retry-After": str(ban)})
    settings = market_settings()
    api = ServerThread(settings).__enter__()  # before the daemon: the ban is watched from its start
    try:
        d = run_daemon(settings)
        wait_until(lambda: market_doc(settings).get("backfill", {}).get("pausedBy") == "418", 20)
        backfill = market_doc(settings)["backfill"]
        assert "418" in backfill["lastError"] and backfill["pausedUntil"] is not None
        # The operator sees the ban in the health answers: the market feed's own, and funding's warnings (its
        # status stays funding's: mark prices flow on).
        wait_until(lambda: get(api.url, "/market/health")[1].get("backfillPausedBy") == "418", 10)
        wait_until(lambda: get(api.url, "/funding/health")[0] == 200, 10)  # mark prices fresh: funding healthy
        _, health = get(api.url, "/funding/health")
        assert health["market"]["backfillPausedBy"] == "418"
        assert any("418 bans this host's IP" in w for w in health["warnings"])
        status = d.doc()["connection_status"]
        updates, attempts = d.doc()["counters"]["updates"], status["reconnect_attempts"]
        wait_until(lambda: d.doc()["counters"]["updates"] > updates, 10)  # the mark-price feed goes on meanwhile
        wait_until(lambda: served(settings), 30)  # and the backfill after the ban
        wait_until(lambda: get(api.url, "/market/health")[1]["backfillPausedBy"] is None, 10)
        status_code, health = get(api.url, "/market/health")
        assert status_code == 200 and health["status"] == "healthy" and not health["warnings"]
    finally:
        api.__exit__()
    klines = [r for r in rest.requests if r.path == "/fapi/v1/klines"]
    assert len(klines) > 1 and klines[1].at - klines[0].at >= ban - 0.05  # nothing asked during the ban
    assert market_doc(settings)["backfill"]["pausedBy"] is None
    status = d.doc()["connection_status"]
    assert status["connected"] and status["reconnect_attempts"] == attempts
    d.stop()


def test_a_kline_connection_refused_with_429_waits_as_told_and_mark_prices_flow_on(
        run_daemon: Callable[[Settings], DaemonThread], market_settings: Callable[..., Settings],
        fakes: tuple[FakeBinanceWS, FakeBinanceRest], capfd: pytest.CaptureFixture[str]) -> None:
    ws, rest = fakes
    # Retry-After is kept up to FUNDING_BACKOFF_MAX_S (FAST's 0.2 s would cap it).
    settings = market_settings(FUNDING_NO_DATA_TIMEOUT_S=f"{scaled(5.0):g}", FUNDING_BACKOFF_MAX_S=f"{scaled(3):g}")
    d = run_daemon(settings)
    wait_until(lambda: served(settings), 30)
    mark_reconnects = d.doc()["connection_status"]["reconnect_attempts"]
    updates = d.doc()["counters"]["updates"]
    ws.refuse_handshakes(429, 2, retry_after=scaled(1.5), only="!ticker@arr")
    capfd.readouterr()
    ws.drop_all(only="!ticker@arr")  # the kline connection alone vanishes, then Binance says 429 twice
    wait_until(lambda: ws.stats["refused"] == 2 and market_doc(settings)["connected"] and served(settings), 30)
    # The market feed's own process logs to the daemon's stderr (the journal).
    waits = [float(line.rsplit("reconnecting in ", 1)[1].split()[0]) for line in capfd.readouterr().err.splitlines()
             if "market feed disconnected" in line]
    assert len(waits) == 3 and min(waits[1:]) >= scaled(1.5)  # the two refusals' Retry-After was kept
    doc = d.doc()
    assert doc["connection_status"]["reconnect_attempts"] == mark_reconnects and doc["counters"]["updates"] > updates
    assert doc["connection_status"]["connected"]
    d.stop()


def test_a_listing_and_a_delisting_mid_hour_change_the_kept_klines_without_a_reconnect(
        run_daemon: Callable[[Settings], DaemonThread], market_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    ws, rest = fakes
    within_one_hour(25)
    settings = market_settings(FUNDING_REFERENCE_REFRESH_S=f"{scaled(0.5):g}",
                               FUNDING_NO_DATA_TIMEOUT_S=f"{scaled(5.0):g}")
    d = run_daemon(settings)
    wait_until(lambda: served(settings), 30)
    reconnects = market_doc(settings)["counters"]["reconnects"]
    market.list_new("NEWCOINUSDT", 2.5)
    market.delist("SOLUSDT")
    wait_until(lambda: "NEWCOINUSDT" in market_doc(settings)["klines"] and served(settings)
               and "SOLUSDT" not in market_doc(settings)["klines"], 30)
    assert any("newcoinusdt@kline_1h" in s for s in ws.streams.values())
    wait_until(lambda: not any("solusdt@kline_1h" in s for s in ws.streams.values()), 10)  # UNSUBSCRIBEd
    assert market_doc(settings)["counters"]["reconnects"] == reconnects
    with ServerThread(settings) as api:
        wait_until(lambda: get(api.url, "/fapi/v1/klines?symbol=NEWCOINUSDT&interval=1h&limit=2")[0] == 200, 10)
        status, body = get(api.url, "/fapi/v1/klines?symbol=SOLUSDT&interval=1h&limit=2")
        assert status == 400 and body["code"] == -1020  # no longer kept: final, not "try again"
        status, body = get(api.url, "/fapi/v1/ticker/24hr?symbol=SOLUSDT")
        assert status == 400 and body["code"] == -1121
    d.stop()


def test_a_listing_younger_than_the_window_is_backfilled_once_and_served_like_binance(
        run_daemon: Callable[[Settings], DaemonThread], market_settings: Callable[..., Settings], market: Market,
        fakes: tuple[FakeBinanceWS, FakeBinanceRest]) -> None:
    """Binance has no candle before a listing: REST answers fewer rows than asked. Those hours are not missing
    (before: asked again every 5 s, 720 weight an hour for each young listing)."""
    ws, rest = fakes
    within_one_hour(25)
    open_hour = int(time.time() * 1000) // 3_600_000 * 3_600_000
    market.candles.first_open["BTCUSDT"] = open_hour - 2 * 3_600_000  # listed two hours ago
    settings = market_settings()
    d = run_daemon(settings)
    wait_until(lambda: served_young(settings), 30)
    asked = rest.counts["/fapi/v1/klines"]
    time.sleep(scaled(6))  # past the next backfill plan (every 5 s)
    assert rest.counts["/fapi/v1/klines"] == asked
    with ServerThread(settings) as api:
        status, rows = get(api.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=5")
        _, truth = get(rest.url, "/fapi/v1/klines?symbol=BTCUSDT&interval=1h&limit=5")
        assert status == 200 and len(rows) == 3 and rows[:2] == truth[:2]  # what Binance has, not -1020
        early = open_hour - 10 * 3_600_000  # before the listing: from its first hour, as Binance
        status, rows = get(api.url, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1h&startTime={early}")
        assert status == 200 and [r[0] for r in rows] == [r[0] for r in truth]
        status, body = get(api.url, "/fapi/v1/klines?symbol=ETHUSDT&interval=1h&limit=30")
        assert status == 400 and body["code"] == -1020  # an old symbol's range beyond the window: still final
    d.stop()


def served_young(settings: Settings) -> bool:
    doc = market_doc(settings)
    klines = doc.get("klines") or {}
    return bool(klines) and doc["backfill"]["pending"] == 0 and klines.get("BTCUSDT", {}).get("firstOpen") is not None
