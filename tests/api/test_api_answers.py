"""Answers a client can act on: "not yet" (retryable) against "not listed" / "not trading" (final), the symbols the
bulk list leaves out, and every path or method not served here in Binance's error shape — over a real uvicorn."""

from __future__ import annotations

import pytest
import requests

from .test_api import Api, api, record  # noqa: F401  (api: the fixture)


NOT_SERVED = [
    ("GET", "/futures/data/openInterestHist?symbol=BTCUSDT&period=5m", 404),
    ("GET", "/api/v3/ticker/price", 404),
    ("GET", "/sapi/v1/system/status", 404),
    ("GET", "/fapi/v1/fundingRate?symbol=BTCUSDT", 404),
    ("GET", "/fapi/v1/depth?symbol=BTCUSDT", 404),
    ("POST", "/fapi/v1/order?symbol=BTCUSDT&side=BUY", 405),
    ("PUT", "/fapi/v1/time", 405),
    ("DELETE", "/fapi/v1/premiumIndex", 405),
    ("GET", "/nowhere", 404),
    ("POST", "/funding/BTCUSDT", 405),
]


@pytest.mark.parametrize("method, path, status", NOT_SERVED)
def test_every_path_and_method_not_served_answers_in_binance_shape(api: Api, method: str, path: str,
                                                                   status: int) -> None:
    """Some answered FastAPI's {"detail": ...}: binance-futures-connector raised KeyError: 'code'. -1000 (ccxt's
    retryable OperationFailed) made ccxt retry a route that will never work; -1020 is final."""
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    r = requests.request(method, api.server.url + path, timeout=5)
    body = r.json()
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert body["code"] == -1020 and f"{method} {path.split('?')[0]} is not served here" in body["msg"]
    if path.startswith("/fapi/"):
        assert set(body) == {"code", "msg"}  # Binance's shape only
    else:
        assert body["detail"]["error"] in ("Not Found", "Method Not Allowed")  # our own shape too


def test_binance_futures_connector_raises_its_client_error_on_routes_not_served(api: Api) -> None:
    from binance.error import ClientError
    from binance.um_futures import UMFutures

    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    client = UMFutures(key="k" * 64, secret="s" * 64, base_url=api.server.url)
    for call, status in ((lambda: client.open_interest_hist("BTCUSDT", "5m"), 404),  # KeyError: 'code' before
                         (lambda: client.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=1), 405),
                         (lambda: client.funding_rate("BTCUSDT"), 404)):
        with pytest.raises(ClientError) as info:
            call()
        assert (info.value.status_code, info.value.error_code) == (status, -1020)
