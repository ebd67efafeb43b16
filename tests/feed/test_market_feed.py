"""The market feed end to end: the real daemon's second connection against the fake exchange's kline and ticker
streams, REST backfill within its budget, the market file, and the API's Binance-shaped klines and tickers."""

from __future__ import annotations

import json
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
    within_one_hour(45)
    settings = market_settings()
    d = run_daemon(settings)
    wait_until(lambda: served(settings), 30)
    doc = market_doc(settings)
    assert set(doc["klines"]) == {s for s, c in rest.market.contracts.items()
                                  if c.contract_type == "PERPETUAL" and s.endswith("USDT")}
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
