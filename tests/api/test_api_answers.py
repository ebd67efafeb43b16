"""Answers a client can act on: "not yet" (retryable) against "not listed" / "not trading" (final), the symbols the
bulk list leaves out, and every path or method not served here in Binance's error shape — over a real uvicorn."""

from __future__ import annotations

import os
import time

import pytest
import requests

from volspike_funding.store import daemon_status, statefile

from ..conftest import wait_until
from .test_api import Api, api, put_reference, record  # noqa: F401  (api: the fixture)


def test_until_the_listing_is_known_a_symbol_without_data_is_not_yet_then_not_found(api: Api) -> None:
    """With Binance unreachable (no exchangeInfo) /funding/ETHUSDT was 404 and premiumIndex -1121: final answers
    about a symbol nobody could know was unlisted."""
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    r = api.get("/funding/ETHUSDT")
    assert r.status_code == 503 and r.json()["detail"]["error"] == "No data yet"
    assert r.json()["detail"]["listingStatus"] is None and "not known yet" in r.json()["detail"]["reason"]
    r = api.get("/fapi/v1/premiumIndex", params={"symbol": "ETHUSDT"})
    assert r.status_code == 503 and r.json()["code"] == -1001 and "listing is not known" in r.json()["msg"]
    malformed = api.get("/fapi/v1/premiumIndex", params={"symbol": "ETH-USDT"})  # never a Binance symbol
    assert malformed.status_code == 400 and malformed.json() == {"code": -1121, "msg": "Invalid symbol."}
    every = api.get("/fapi/v1/premiumIndex")
    assert every.status_code == 200 and "x-missing-symbols" not in every.headers  # unknown is never a number
    from binance.error import ServerError
    from binance.um_futures import UMFutures
    with pytest.raises(ServerError) as info:  # retryable; ClientError -1121 ("bad symbol") before
        UMFutures(base_url=api.server.url).mark_price("ETHUSDT")
    assert info.value.status_code == 503

    put_reference(api, "BTCUSDT", "SOLUSDT")
    r = api.get("/funding/ETHUSDT")
    assert r.status_code == 404 and r.json()["detail"] == {"error": "Symbol not found", "symbol": "ETHUSDT"}
    r = api.get("/fapi/v1/premiumIndex", params={"symbol": "ETHUSDT"})
    assert r.status_code == 400 and r.json() == {"code": -1121, "msg": "Invalid symbol."}
    batch = api.get("/funding/batch", params={"symbols": "BTCUSDT,ETHUSDT,SOLUSDT"}).json()
    assert [i.get("error") for i in batch["data"]] == [None, "Symbol not found", "No data yet"]


def test_a_listed_symbol_that_is_not_trading_is_a_final_error_naming_its_status(api: Api) -> None:
    """A settling or delisted symbol without fresh data answered 503 -1001, which clients retry for ever."""
    api.put({"BTCUSDT": record("BTCUSDT", 0), "GONEUSDT": record("GONEUSDT", 3600)})
    put_reference(api, "BTCUSDT", OLDUSDT="SETTLING", GONEUSDT="SETTLING", NEWUSDT="PENDING_TRADING")
    for name, status in (("OLDUSDT", "SETTLING"), ("GONEUSDT", "SETTLING"), ("NEWUSDT", "PENDING_TRADING")):
        r = api.get(f"/funding/{name}")
        detail = r.json()["detail"]
        assert r.status_code == 404 and detail["error"] == "Not trading" and detail["listingStatus"] == status
        r = api.get("/fapi/v1/premiumIndex", params={"symbol": name.lower()})
        assert r.status_code == 400 and r.json()["code"] == -1122 and f"{name} is {status}" in r.json()["msg"]
    assert api.get("/funding/GONEUSDT").json()["detail"]["ageSeconds"] >= 3600  # its old data: still an age
    batch = api.get("/funding/batch", params={"symbols": "OLDUSDT,BTCUSDT"}).json()
    assert batch["data"][0]["error"] == "Not trading" and (batch["found"], batch["missing"]) == (1, 1)


def test_a_not_trading_symbol_with_fresh_data_is_served(api: Api) -> None:
    api.put({"OLDUSDT": record("OLDUSDT", 0)})
    put_reference(api, OLDUSDT="SETTLING")
    assert api.get("/funding/OLDUSDT").status_code == 200
    assert api.get("/fapi/v1/premiumIndex", params={"symbol": "OLDUSDT"}).status_code == 200


def test_the_bulk_list_counts_listed_symbols_it_leaves_out_for_lack_of_data(api: Api) -> None:
    """fetch_funding_rates([BTC, MSTR]) returned BTC alone while X-Stale-Symbols said 0."""
    api.put({"BTCUSDT": record("BTCUSDT", 0), "ETHUSDT": record("ETHUSDT", 3600)})
    put_reference(api, "BTCUSDT", "ETHUSDT", "MSTRUSDT", "AAPLUSDT", OLDUSDT="SETTLING")
    every = api.get("/fapi/v1/premiumIndex")
    assert [i["symbol"] for i in every.json()] == ["BTCUSDT"]
    # MSTRUSDT and AAPLUSDT trade but never had data; a settling symbol is not expected to have any.
    assert every.headers["x-stale-symbols"] == "1" and every.headers["x-missing-symbols"] == "2"


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


def test_health_does_not_call_a_connection_never_made_disconnected(api: Api) -> None:
    now = time.time()
    reason = ("cannot connect to fstream.binance.com: DNS lookup failed: Name or service not known (check DNS and "
              "that outbound TCP 443 is allowed)")
    connection = {**daemon_status.new_connection_status("wss://x"), "last_error": reason}
    doc = statefile.build_document({}, connection, {}, now=now, heartbeat_s=5, started_at=now - 10)
    tmp = api.path.with_name(".t")
    tmp.write_bytes(statefile.encode(doc))
    os.replace(tmp, api.path)
    written = statefile.identity(api.path)
    wait_until(lambda: api.server.cache.identity == written, 5)
    assert api.get("/funding/health").json()["reasons"][0] == f"websocket not connected: {reason}"
