"""Today's Binance: the 2026 wire replayed through the parser, reference data, every listed symbol, and the real
client libraries (ccxt, python-binance, Binance's official SDK, binance-futures-connector) against our API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from volspike_funding.api.server import ServerThread
from volspike_funding.fake.market import (COIN_M_SYMBOLS, DELIVERY_SYMBOL, SILENT_SYMBOL, STREAM_ONLY_SYMBOLS,
                                          TRADFI_IN_STREAM, Market)
from volspike_funding.fake.rest_server import FakeBinanceRest
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.binance.wire import parse_frame

from ..conftest import FAST, DaemonThread, read_doc, wait_until

ROWS = (Path(__file__).parent.parent / "data" / "markprice_2026.jsonl").read_text(encoding="utf-8").splitlines()


def frame(*rows: str) -> str:
    return json.dumps({"stream": "!markPrice@arr@1s", "data": [json.loads(r) for r in rows]})


def test_recorded_2026_rows_parse_with_st_and_ap() -> None:
    parsed = parse_frame(frame(*ROWS))
    btc, dated, gold = parsed.updates
    assert parsed.defects == [] and parsed.all_market and parsed.other_kinds == {"coin_m": 1}
    assert btc.symbol == "BTCUSDT" and btc.funding_rate == 0.00000078 and btc.next_funding_time == 1791388800000
    assert gold.symbol == "XAUUSDT" and gold.funding_rate_str == "0.00019799"


def test_t_zero_means_no_funding_not_a_rate_of_zero() -> None:
    dated = parse_frame(frame(ROWS[1])).updates[0]
    assert dated.symbol == "BTCUSDT_260925" and dated.funding_rate is None and dated.next_funding_time is None
    assert dated.funding_rate_str == "0.00000000"  # Binance's own string, for the Binance-compatible route


def test_coin_m_rows_are_counted_by_kind_never_as_malformed() -> None:
    parsed = parse_frame(frame(ROWS[3], ROWS[3], ROWS[0]))
    assert [u.symbol for u in parsed.updates] == ["BTCUSDT"] and parsed.other_kinds == {"coin_m": 2}
    assert parsed.defects == []


@pytest.mark.parametrize("wire", ["2026", "legacy"])
def test_fake_market_speaks_both_shapes(wire: str) -> None:
    market = Market(120, wire=wire)
    parsed = parse_frame(market.frame(1_700_000_000_000))
    by_symbol = {u.symbol: u for u in parsed.updates}
    assert len(by_symbol) == 120 and by_symbol[DELIVERY_SYMBOL].funding_rate is None
    raw = json.loads(market.frame(1_700_000_000_000))["data"]
    if wire == "2026":
        assert parsed.other_kinds == {"coin_m": len(COIN_M_SYMBOLS)} and TRADFI_IN_STREAM in by_symbol
        assert all("ap" in r and "st" in r for r in raw)
        assert by_symbol[DELIVERY_SYMBOL].funding_rate_str == "0.00000000"
    else:
        assert parsed.other_kinds == {} and all("ap" not in r and "st" not in r for r in raw)
        assert by_symbol[DELIVERY_SYMBOL].funding_rate_str is None


# -- the whole service against a fake Binance speaking today's wire -------------------------------------------------

class Live:
    def __init__(self, tmp: Path) -> None:
        self.market = Market(120)
        self.ws = FakeBinanceWS(self.market, cadence_s=0.05).start()
        self.rest = FakeBinanceRest(self.market).start()
        env = {"VOLSPIKE_ENV_FILE": str(tmp / "none.env"), "FUNDING_STATE_FILE": str(tmp / ".funding_state.json"),
               **FAST, "FUNDING_STALE_AFTER_S": "5", "FUNDING_REFERENCE_ENABLED": "true",
               "BINANCE_WS_URL": self.ws.url, "BINANCE_REST_URL": self.rest.url}
        from volspike_funding.core.settings import load_settings
        self.settings = load_settings(env)
        self.daemon = DaemonThread(self.settings)
        self.daemon.thread.start()
        self.api = ServerThread(self.settings, poll_s=0.05).__enter__()
        self.url = self.api.url
        # Ready: reference data known and the stream-only symbols arrived through their own streams.
        wait_until(lambda: all(s in self.doc()["funding_state"] for s in STREAM_ONLY_SYMBOLS), 15)
        wait_until(lambda: self.get("/fapi/v1/exchangeInfo").status_code == 200, 10)

    def doc(self) -> dict[str, Any]:
        try:
            return read_doc(self.settings.state_file)
        except (OSError, ValueError):
            return {"funding_state": {}}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=5, **kw)

    def stop(self) -> None:
        self.api.__exit__(None, None, None)
        self.daemon.stop()
        self.rest.stop()
        self.ws.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    service = Live(tmp_path_factory.mktemp("live2026"))
    yield service
    service.stop()


def test_only_usdm_rows_are_stored_and_other_kinds_are_counted(live: Live) -> None:
    doc = live.doc()
    assert not set(COIN_M_SYMBOLS) & set(doc["funding_state"])
    assert doc["counters"]["other_kinds"]["coin_m"] > 0 and "coin_m" not in doc["counters"]["malformed"]
    assert live.get("/funding/BTCUSD_PERP").status_code == 404
    assert live.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSD_PERP"}).json()["code"] == -1121


def test_dated_contract_has_null_funding_on_our_routes_and_binance_strings_on_theirs(live: Live) -> None:
    body = live.get(f"/funding/{DELIVERY_SYMBOL}").json()
    assert body["fundingRate"] is None and body["nextFundingTime"] is None and body["fundingIntervalHours"] is None
    assert body["contractType"] == "CURRENT_QUARTER"
    item = live.get("/fapi/v1/premiumIndex", params={"symbol": DELIVERY_SYMBOL}).json()
    assert item["lastFundingRate"] == "0.00000000" and item["nextFundingTime"] == 0


def test_reference_data_adds_funding_terms_and_interest_rate(live: Live) -> None:
    sol, btc = live.get("/funding/SOLUSDT").json(), live.get("/funding/BTCUSDT").json()
    assert (sol["fundingIntervalHours"], sol["fundingRateCap"], sol["fundingRateFloor"]) == (4, 0.02, -0.02)
    assert (btc["fundingIntervalHours"], btc["fundingRateCap"], btc["contractType"]) == (8, None, "PERPETUAL")
    assert live.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}).json()["interestRate"] == "0.00010000"
    health = live.get("/funding/health").json()
    assert health["referenceDataAgeSeconds"] is not None and health["referenceSymbols"] >= 120
    metrics = live.get("/metrics").text
    assert 'funding_reference_age_seconds{part="exchangeInfo"}' in metrics and "funding_clock_skew_seconds" in metrics


def test_symbols_the_all_market_stream_lacks_come_from_their_own_streams(live: Live) -> None:
    assert live.ws.stats["subscribe_messages"] >= 1 and live.ws.stats["limit_closes"] == 0
    tsla = live.get("/funding/TSLAUSDT")
    assert tsla.status_code == 200 and tsla.json()["contractType"] == "TRADIFI_PERPETUAL"
    assert live.get("/funding/health").json()["perSymbolStreams"] >= len(STREAM_ONLY_SYMBOLS) + 1
    assert live.rest.counts["/fapi/v1/premiumIndex"] <= 1  # data still comes only from the WebSocket


def test_listed_symbol_without_data_is_retryable_and_unlisted_is_invalid(live: Live) -> None:
    silent = live.get(f"/funding/{SILENT_SYMBOL}")
    assert silent.status_code == 503 and silent.json()["detail"]["error"] == "No data yet"
    assert live.get("/funding/NOPEUSDT").status_code == 404
    r = live.get("/fapi/v1/premiumIndex", params={"symbol": SILENT_SYMBOL})
    assert r.status_code == 503 and r.json()["code"] == -1001
    r = live.get("/fapi/v1/premiumIndex", params={"symbol": "NOPEUSDT"})
    assert r.status_code == 400 and r.json()["code"] == -1121
    batch = live.get("/funding/batch", params={"symbols": f"BTCUSDT,{SILENT_SYMBOL},NOPEUSDT"}).json()
    assert [i.get("error") for i in batch["data"]] == [None, "No data yet", "Symbol not found"]


def test_other_fapi_paths_answer_binance_errors(live: Live) -> None:
    from binance.error import ClientError
    from binance.um_futures import UMFutures

    r = live.get("/fapi/v1/depth", params={"symbol": "BTCUSDT"})
    assert r.status_code == 404 and set(r.json()) == {"code", "msg"}
    with pytest.raises(ClientError) as info:  # a KeyError: 'code' before
        UMFutures(base_url=live.url).depth("BTCUSDT")
    assert info.value.status_code == 404


def test_ccxt_binanceusdm_with_only_the_base_url_changed(live: Live) -> None:
    import ccxt

    exchange = ccxt.binanceusdm({"timeout": 5000})
    for name, url in list(exchange.urls["api"].items()):
        if name.startswith("fapi"):
            exchange.urls["api"][name] = url.replace("https://fapi.binance.com", live.url)
    markets = exchange.load_markets()
    assert "BTC/USDT:USDT" in markets and "TSLA/USDT:USDT" in markets
    rate = exchange.fetch_funding_rate("BTC/USDT:USDT")
    assert rate["markPrice"] > 0 and rate["fundingRate"] is not None and rate["interestRate"] == 0.0001
    assert len(exchange.fetch_funding_rates()) >= 120
    assert exchange.fetch_mark_price("ETH/USDT:USDT")["markPrice"] > 0
    assert len(exchange.fetch_mark_prices()) >= 120
    assert exchange.fetch_funding_interval("SOL/USDT:USDT")["interval"] == "4h"
    assert "DOGE/USDT:USDT" in exchange.fetch_funding_intervals()
    assert abs(exchange.fetch_time() - exchange.milliseconds()) < 60_000
    with pytest.raises(ccxt.OperationFailed):  # -1001: ccxt's retryable family, not BadSymbol
        exchange.fetch_funding_rate(f"{SILENT_SYMBOL.removesuffix('USDT')}/USDT:USDT")


def test_python_binance_with_only_the_base_url_changed(live: Live) -> None:
    from binance.client import Client

    client = Client(ping=False)  # ping=True would reach api.binance.com from the constructor
    client.FUTURES_URL = live.url + "/fapi"
    assert float(client.futures_mark_price(symbol="BTCUSDT")["markPrice"]) > 0
    assert len(client.futures_exchange_info()["symbols"]) >= 120
    assert client.futures_ping() == {} and client.futures_time()["serverTime"] > 0


def test_binance_official_usdm_sdk_with_only_the_base_url_changed(live: Live) -> None:
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationRestAPI, DerivativesTradingUsdsFutures)

    api = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(base_path=live.url, timeout=5000))
    rest = api.rest_api
    assert float(rest.mark_price(symbol="BTCUSDT").data().actual_instance.mark_price) > 0
    assert {i.symbol for i in rest.get_funding_rate_info().data()} >= {"SOLUSDT", "DOGEUSDT"}
    assert len(rest.exchange_information().data().symbols) >= 120
    assert rest.check_server_time().data().server_time > 0


def test_the_list_with_every_symbol_stale_is_a_retryable_error(tmp_path: Path) -> None:
    from ..api.test_api import put_state, record
    from volspike_funding.core.settings import load_settings

    settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "n"), "FUNDING_STATE_FILE": str(tmp_path / "s.json")})
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 3600)})
    with ServerThread(settings, poll_s=0.05) as api:
        r = requests.get(api.url + "/fapi/v1/premiumIndex", timeout=5)
        assert r.status_code == 503 and r.json()["code"] == -1001


def test_consumers_take_their_universe_from_the_local_exchange_info(live: Live, tmp_path: Path) -> None:
    from volspike_funding.core.settings import load_settings
    from volspike_funding.consumers.volume_alerts import VolumeAlerts

    with FakeBinanceRest(live.market) as rest:
        settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "n"), "BINANCE_REST_URL": rest.url,
                                  "WS_FUNDING_API_URL": live.url + "/funding",
                                  "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json")})
        alerts = VolumeAlerts(settings, dry_run=True)
        universe = alerts.universe()
        assert "BTCUSDT" in universe and DELIVERY_SYMBOL not in universe and "TSLAUSDT" not in universe
        assert rest.counts["/fapi/v1/exchangeInfo"] == 0  # 0 REST weight while the local copy is fresh
        assert alerts.source.exchange_info()["symbols"] and rest.counts["/fapi/v1/exchangeInfo"] == 0
        rest_only = VolumeAlerts(load_settings({**{"VOLSPIKE_ENV_FILE": str(tmp_path / "n"),
                                                   "BINANCE_REST_URL": rest.url,
                                                   "VOLUME_ALERT_STATE_FILE": str(tmp_path / "b.json")},
                                                "FUNDING_SOURCE_MODE": "rest"}), dry_run=True)
        assert rest_only.universe() == universe and rest.counts["/fapi/v1/exchangeInfo"] == 1


# -- answers a client can act on: final for what will never work, retryable for "not yet" ----------------------------

def ccxt_usdm(live: Live) -> Any:
    import ccxt

    exchange = ccxt.binanceusdm({"timeout": 5000})
    for name, url in list(exchange.urls["api"].items()):
        if name.startswith("fapi"):  # fapiData too: /futures/data/*
            exchange.urls["api"][name] = url.replace("https://fapi.binance.com", live.url)
    exchange.load_markets()
    return exchange


def test_ccxt_raises_final_errors_for_routes_not_served_and_symbols_not_trading(live: Live) -> None:
    """-1000 was ccxt's retryable OperationFailed: a retry loop on funding history, depth or tickers never ended."""
    import ccxt

    exchange = ccxt_usdm(live)
    for call in (lambda: exchange.fetch_funding_rate_history("BTC/USDT:USDT"),
                 lambda: exchange.fetch_open_interest_history("BTC/USDT:USDT", "5m"),
                 lambda: exchange.fetch_order_book("BTC/USDT:USDT"), exchange.fetch_tickers):
        with pytest.raises(ccxt.BadRequest, match="-1020"):
            call()
    # SETTLING, no data: -1122, ccxt's final ExchangeError (BadRequest on fapi.binance.com's own URL map).
    with pytest.raises(ccxt.ExchangeError, match="OLDCOINUSDT is SETTLING") as info:
        exchange.fetch_funding_rate("OLDCOIN/USDT:USDT")
    assert not isinstance(info.value, ccxt.OperationFailed)


def test_the_bulk_list_says_how_many_listed_symbols_it_left_out(live: Live) -> None:
    exchange = ccxt_usdm(live)
    rates = exchange.fetch_funding_rates(["BTC/USDT:USDT", f"{SILENT_SYMBOL.removesuffix('USDT')}/USDT:USDT"])
    assert list(rates) == ["BTC/USDT:USDT"]  # Binance's shape has no place for the absent one: the header says it
    assert int(exchange.last_response_headers["X-Missing-Symbols"]) >= 1
    assert live.get("/fapi/v1/premiumIndex").headers["X-Missing-Symbols"] == exchange.last_response_headers[
        "X-Missing-Symbols"]


def test_python_binance_and_the_sdks_raise_their_client_errors_with_binance_codes(live: Live) -> None:
    from binance.client import Client
    from binance.error import ClientError
    from binance.exceptions import BinanceAPIException
    from binance.um_futures import UMFutures
    from binance_common.errors import BadRequestError, NotFoundError
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationRestAPI, DerivativesTradingUsdsFutures)

    client = Client(ping=False)
    client.FUTURES_URL, client.FUTURES_DATA_URL = live.url + "/fapi", live.url + "/futures/data"
    for call, code in ((lambda: client.futures_funding_rate(symbol="BTCUSDT"), -1020),
                       (lambda: client.futures_open_interest_hist(symbol="BTCUSDT", period="5m"), -1020),
                       (lambda: client.futures_mark_price(symbol="OLDCOINUSDT"), -1122)):
        with pytest.raises(BinanceAPIException) as py_info:
            call()
        assert py_info.value.code == code
    rest = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(base_path=live.url, timeout=5000)).rest_api
    with pytest.raises(NotFoundError, match="-1020"):
        rest.open_interest_statistics(symbol="BTCUSDT", period="5m")
    with pytest.raises(BadRequestError, match="-1122"):
        rest.mark_price(symbol="OLDCOINUSDT")
    connector = UMFutures(key="k" * 64, secret="s" * 64, base_url=live.url)
    for call, status, code in ((lambda: connector.open_interest_hist("BTCUSDT", "5m"), 404, -1020),  # KeyError before
                               (lambda: connector.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=1),
                                405, -1020),
                               (lambda: connector.mark_price("OLDCOINUSDT"), 400, -1122)):
        with pytest.raises(ClientError) as info:
            call()
        assert (info.value.status_code, info.value.error_code) == (status, code)
