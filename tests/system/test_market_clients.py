"""Real Binance clients read the market feed's klines and 24 h tickers with only the base URL changed: ccxt
``binanceusdm``, python-binance, Binance's USDⓈ-M SDK and binance-futures-connector (issue 21)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ..conftest import within_one_hour
from ..consumers.test_volume_klines import Warm


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warm]:
    w = Warm(tmp_path_factory.mktemp("clients"))
    yield w
    w.stop()


def truth(w: Warm, limit: int) -> list[list[Any]]:
    import requests
    return requests.get(w.rest.url + "/fapi/v1/klines", params={"symbol": "BTCUSDT", "interval": "1h",
                                                                 "limit": limit}, timeout=5).json()


def test_ccxt_fetch_ohlcv_and_tickers(live: Warm) -> None:
    within_one_hour(15)
    import ccxt

    exchange = ccxt.binanceusdm({"timeout": 5000})
    for name, url in list(exchange.urls["api"].items()):
        if name.startswith("fapi"):
            exchange.urls["api"][name] = url.replace("https://fapi.binance.com", live.api.url)
    exchange.load_markets()
    candles = exchange.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=3)
    assert [c[0] for c in candles] == [r[0] for r in truth(live, 3)]
    assert candles[0][4] == float(truth(live, 3)[0][4])  # a closed hour: Binance's close, to the digit
    tickers = exchange.fetch_tickers()
    assert "ETH/USDT:USDT" in tickers and tickers["ETH/USDT:USDT"]["quoteVolume"] > 0
    assert exchange.fetch_ticker("BTC/USDT:USDT")["last"] > 0
    with pytest.raises(ccxt.BadRequest, match="-1020"):  # an interval not kept: final, never retried
        exchange.fetch_ohlcv("BTC/USDT:USDT", "5m", limit=3)


def test_python_binance_klines_and_ticker(live: Warm) -> None:
    within_one_hour(15)
    from binance.client import Client

    client = Client(ping=False)
    client.FUTURES_URL = live.api.url + "/fapi"
    rows = client.futures_klines(symbol="BTCUSDT", interval="1h", limit=2)
    assert len(rows) == 2 and rows[0] == truth(live, 2)[0]
    assert float(client.futures_ticker(symbol="ETHUSDT")["quoteVolume"]) > 0


def test_binance_sdk_and_connector_klines_and_ticker(live: Warm) -> None:
    within_one_hour(15)
    from binance.um_futures import UMFutures
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationRestAPI, DerivativesTradingUsdsFutures)
    from binance_sdk_derivatives_trading_usds_futures.rest_api.models.enums import KlineCandlestickDataIntervalEnum

    rest = DerivativesTradingUsdsFutures(config_rest_api=ConfigurationRestAPI(base_path=live.api.url,
                                                                              timeout=5000)).rest_api
    rows = rest.kline_candlestick_data(symbol="BTCUSDT", interval=KlineCandlestickDataIntervalEnum.INTERVAL_1h,
                                       limit=2).data()
    assert len(rows) == 2
    ticker = rest.ticker24hr_price_change_statistics(symbol="ETHUSDT").data().actual_instance
    assert float(ticker.quote_volume) > 0
    connector = UMFutures(base_url=live.api.url)
    assert connector.klines("BTCUSDT", "1h", limit=2)[0] == truth(live, 2)[0]
    assert float(connector.ticker_24hr_price_change("ETHUSDT")["lastPrice"]) > 0
