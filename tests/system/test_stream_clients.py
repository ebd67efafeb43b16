"""Real Binance clients on the local WebSocket with only their WebSocket base URL changed (issue 22): ccxt pro
``binanceusdm`` (``watchMarkPrice``/``watchMarkPrices``), python-binance's socket manager and Binance's official
USDⓈ-M SDK streams, and the npm ``binance`` package's WebsocketClient."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from ..api.stream_stack import StreamStack
from ..conftest import scaled, wait_until


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamStack]:
    s = StreamStack(tmp_path_factory.mktemp("clients"), rest=True)
    yield s
    s.stop()


def metric(stack: StreamStack, name: str) -> float:
    text = requests.get(stack.api.url + "/metrics", timeout=scaled(5)).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def compressed(stack: StreamStack) -> float:
    """Frames written compressed so far (permessage-deflate), once no connection of an earlier test is left: what
    the counter gains afterwards went to this test's client."""
    wait_until(lambda: metric(stack, "funding_ws_connections") == 0, 10)
    return metric(stack, "funding_ws_frames_compressed_total")


def test_ccxt_pro_watch_mark_price_and_prices(stack: StreamStack) -> None:
    import ccxt.pro as ccxtpro

    before = compressed(stack)

    async def run() -> None:
        exchange = ccxtpro.binanceusdm({"timeout": 5000})
        for name, url in list(exchange.urls["api"].items()):
            if name.startswith("fapi") and isinstance(url, str):
                exchange.urls["api"][name] = url.replace("https://fapi.binance.com", stack.api.url)
        # ccxt turns ".../ws" into ".../market/ws" for mark prices, as it does for Binance's own URL.
        exchange.urls["api"]["ws"]["linear"] = stack.ws + "/ws"
        try:
            ticker = await asyncio.wait_for(exchange.watch_mark_price("BTC/USDT:USDT"), scaled(20))
            assert ticker["symbol"] == "BTC/USDT:USDT" and ticker["info"]["s"] == "BTCUSDT"
            assert ticker["markPrice"] == float(ticker["info"]["p"]) > 0
            tickers = await asyncio.wait_for(exchange.watch_mark_prices(["BTC/USDT:USDT", "ETH/USDT:USDT"]),
                                             scaled(20))
            assert set(tickers) <= {"BTC/USDT:USDT", "ETH/USDT:USDT"} and tickers
            everything = await asyncio.wait_for(exchange.watch_mark_prices(), scaled(20))
            assert everything
        finally:
            await exchange.close()

    asyncio.run(run())
    assert compressed(stack) > before, "ccxt offers permessage-deflate: the all-market array came compressed"


def test_python_binance_socket_manager(stack: StreamStack) -> None:
    from binance import AsyncClient, BinanceSocketManager

    before = compressed(stack)

    async def run() -> None:
        client = AsyncClient()  # not create(): that pings Binance's REST API first
        try:
            manager = BinanceSocketManager(client)
            manager.FSTREAM_URL = stack.ws + "/"
            async with manager.symbol_mark_price_socket("BTCUSDT") as socket:
                message = await asyncio.wait_for(socket.recv(), scaled(20))
                assert message["stream"] == "btcusdt@markPrice@1s" and message["data"]["s"] == "BTCUSDT"
            async with manager.all_mark_price_socket() as socket:
                message = await asyncio.wait_for(socket.recv(), scaled(20))
                assert message["stream"] == "!markPrice@arr@1s" and {r["s"] for r in message["data"]} >= {"BTCUSDT"}
                row = next(r for r in message["data"] if r["s"] == "ETHUSDT")
            assert float(row["p"]) > 0 and isinstance(row["p"], str) and row["T"] > 0
        finally:
            await client.close_connection()

    asyncio.run(run())
    assert compressed(stack) > before, "websockets offers permessage-deflate: the all-market array came compressed"


def test_binance_sdk_streams(stack: StreamStack) -> None:
    from binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures import (
        ConfigurationWebSocketStreams, DerivativesTradingUsdsFutures)
    from binance_sdk_derivatives_trading_usds_futures.websocket_streams.models.enums import (
        MarkPriceStreamUpdateSpeedEnum)

    async def run() -> None:
        client = DerivativesTradingUsdsFutures(config_ws_streams=ConfigurationWebSocketStreams(stream_url=stack.ws))
        connection = await client.websocket_streams.create_connection()
        got: asyncio.Queue[Any] = asyncio.Queue()
        try:
            stream = await connection.mark_price_stream(symbol="btcusdt",
                                                        update_speed=MarkPriceStreamUpdateSpeedEnum.UPDATE_SPEED_1s)
            stream.on("message", got.put_nowait)
            update = await asyncio.wait_for(got.get(), scaled(20))
            assert update.s == "BTCUSDT" and float(update.p) > 0 and update.E > 0
            all_market = await connection.mark_price_stream_for_all_market()
            every: asyncio.Queue[Any] = asyncio.Queue()
            all_market.on("message", every.put_nowait)
            rows = await asyncio.wait_for(every.get(), scaled(20))
            assert len(rows) >= 10
        finally:
            await connection.close_connection(close_session=True)

    asyncio.run(run())


NODE_CLIENTS = Path(__file__).resolve().parent / "node"


def test_npm_binance_websocket_client(stack: StreamStack) -> None:
    """The npm ``binance`` package's WebsocketClient with ``wsUrl`` set (it adds ``/market/stream`` itself)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the npm binance client needs Node.js)")
    if not (NODE_CLIENTS / "node_modules" / "binance").is_dir():
        pytest.skip("tests/system/node has no node_modules: scripts/test.sh runs `npm ci` there when npm exists")
    before = compressed(stack)
    done = subprocess.run([node, str(NODE_CLIENTS / "binance_ws_client.js"), stack.ws], capture_output=True,
                          text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["replies"] == [{"result": None, "id": 1}]
    assert seen["symbol"]["s"] == "BTCUSDT" and seen["symbol"]["streamName"] == "btcusdt@markPrice@1s"
    assert seen["allMarket"]["rows"] >= 10 and seen["allMarket"]["first"]["e"] == "markPriceUpdate"
    assert compressed(stack) > before, "ws offers permessage-deflate: the all-market array came compressed"


def test_loopback_only_unless_the_api_is_opted_in(tmp_path: Path) -> None:
    """The WebSocket is the API's port: the API's bind rules are its rules (no second listener)."""
    from volspike_funding.api.server import check_bind
    from volspike_funding.core.errors import SettingsError
    from volspike_funding.core.settings import load_settings

    settings = load_settings({"VOLSPIKE_ENV_FILE": str(tmp_path / "none"), "FUNDING_API_HOST": "0.0.0.0"})
    with pytest.raises(SettingsError, match="FUNDING_API_ALLOW_REMOTE"):
        check_bind(settings)
