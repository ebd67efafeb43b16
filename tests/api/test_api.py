"""The HTTP API under real uvicorn on an ephemeral port, over hand-made state files (focused contract tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import requests

from volspike_funding.store import daemon_status, statefile
from volspike_funding.api.models import MAX_BATCH_SYMBOLS
from volspike_funding.api.server import ServerThread
from volspike_funding.fake.market import NON_ASCII_SYMBOL
from volspike_funding.core.settings import Settings

from ..conftest import wait_until

FIELDS = {"symbol", "markPrice", "fundingRate", "nextFundingTime", "indexPrice", "updatedAt", "ageSeconds",
          "estimatedSettlePrice", "eventTime", "stale", "fundingIntervalHours", "fundingRateCap", "fundingRateFloor",
          "contractType"}
HEALTH = {"status", "websocketConnected", "symbolCount", "uptimeSeconds", "lastConnectedTime", "messagesReceived",
          "reconnectAttempts", "oldestDataAgeSeconds", "newestDataAgeSeconds", "staleSymbols", "daemonAlive",
          "reasons"}


def record(symbol: str, age: float, mark: str = "100.50000000", funding: str | None = "-0.00012000",
           now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"symbol": symbol, "markPrice": float(mark), "indexPrice": 100.4, "estimatedSettlePrice": 100.45,
            "fundingRate": None if funding is None else float(funding),
            "nextFundingTime": None if funding is None else 1795507200000, "eventTime": int((now - age) * 1000),
            "updatedAt": now - age,
            "binance": f"{mark}|100.40000000|100.45000000|{funding or ''}"}


def put_state(path: Path, symbols: dict[str, dict[str, Any]], *, connected: bool = True,
              heartbeat_age: float = 0.0, stopped: bool = False, last_error: str | None = None) -> None:
    now = time.time()
    connection = {**daemon_status.new_connection_status("wss://x"), "connected": connected, "last_error": last_error,
                  "messages_received": 5, "last_connected_time": now - 100}
    doc = statefile.build_document(symbols, connection, {"malformed": {"bad_json": 2}}, now=now - heartbeat_age,
                                   heartbeat_s=5, started_at=now - 100, stopped=stopped)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".t")
    tmp.write_bytes(statefile.encode(doc))
    os.replace(tmp, path)


def put_reference(api: "Api", *trading: str, **other_status: str) -> None:
    """Write an exchangeInfo listing ``trading`` (TRADING) and ``other_status`` (symbol=status) next to the state."""
    from volspike_funding.store import reference

    entries = [{"symbol": s, "status": "TRADING", "contractType": "PERPETUAL"} for s in trading]
    entries += [{"symbol": s, "status": st, "contractType": "PERPETUAL"} for s, st in other_status.items()]
    info = orjson.dumps({"symbols": entries})
    reference.write(api.path.with_name(".funding_reference.json"), reference.ReferenceData(info, time.time()))
    wait_until(lambda: api.server.cache.view.reference is not None
               and api.server.cache.view.reference.exchange_info == info, 5)


class Api:
    def __init__(self, server: ServerThread, path: Path) -> None:
        self.server, self.path = server, path

    def get(self, url: str, **kw: Any) -> requests.Response:
        return requests.get(self.server.url + url, timeout=5, **kw)

    def put(self, symbols: dict[str, dict[str, Any]], **kw: Any) -> None:
        put_state(self.path, symbols, **kw)
        written = statefile.identity(self.path)
        wait_until(lambda: self.server.cache.identity == written, 5)


@pytest.fixture
def api(make_settings) -> Iterator[Api]:
    settings: Settings = make_settings(FUNDING_STALE_AFTER_S="60")
    settings.state_file.parent.mkdir(parents=True)  # as systemd's StateDirectory= does: inotify arms at once
    with ServerThread(settings) as server:
        yield Api(server, settings.state_file)


def test_before_the_daemon_wrote_anything_it_answers_503_missing(api: Api) -> None:
    r = api.get("/funding/BTCUSDT")
    assert r.status_code == 503 and r.json()["detail"]["error"] == "State unavailable"
    assert r.json()["detail"]["reason"] == "missing"
    h = api.get("/funding/health")
    assert h.status_code == 503 and set(h.json()) >= HEALTH and h.json()["reasons"] == ["state unavailable: missing"]
    assert api.get("/funding/batch").status_code == 503


def test_symbol_answer_contract(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 1.0), "BTCUSDT_261225": record("BTCUSDT_261225", 1.0, funding=None)})
    r = api.get("/funding/BTCUSDT")
    assert r.status_code == 200 and set(r.json()) == FIELDS
    body = r.json()
    assert body["markPrice"] == 100.5 and body["fundingRate"] == -0.00012 and body["stale"] is False
    assert 0.9 <= body["ageSeconds"] < 5
    delivery = api.get("/funding/BTCUSDT_261225").json()
    assert delivery["fundingRate"] is None and delivery["nextFundingTime"] is None


def test_lookup_is_case_insensitive_and_non_ascii_works(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0), NON_ASCII_SYMBOL: record(NON_ASCII_SYMBOL, 0)})
    assert api.get("/funding/btcUSDT").json()["symbol"] == "BTCUSDT"
    r = api.get("/funding/%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT")
    assert r.status_code == 200 and r.json()["symbol"] == NON_ASCII_SYMBOL


@pytest.mark.parametrize("path, status, error", [
    ("/funding/NOPEUSDT", 503, "No data yet"),  # no exchangeInfo here: "not found" cannot be told yet
    ("/funding/" + "A" * 41, 400, "Invalid symbol"),
    ("/funding/%01BTC", 400, "Invalid symbol"),
    ("/funding/%20", 400, "Invalid symbol"),
    ("/funding/BTC%0AUSDT", 400, "Invalid symbol"),
    ("/nowhere", 404, "Not Found"),
])
def test_errors_share_one_shape(api: Api, path: str, status: int, error: str) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    r = api.get(path)
    assert r.status_code == status and r.json()["detail"]["error"] == error
    assert r.headers["content-type"] == "application/json"


def test_stale_symbol_is_503_with_ages(api: Api) -> None:
    api.put({"OLDUSDT": record("OLDUSDT", 120), "BTCUSDT": record("BTCUSDT", 0)})
    r = api.get("/funding/OLDUSDT")
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert detail["error"] == "Data stale" and detail["maxAgeSeconds"] == 60 and detail["ageSeconds"] >= 120


def test_batch_folds_duplicates_and_reports_missing_and_stale(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0), "ETHUSDT": record("ETHUSDT", 0), "OLDUSDT": record("OLDUSDT", 300)})
    body = api.get("/funding/batch", params={"symbols": "BTCUSDT, btcusdt,ETHUSDT,NOPE,OLDUSDT,BTCUSDT,"}).json()
    assert (body["found"], body["missing"], body["total"]) == (2, 2, 4)
    by_symbol = {item["symbol"]: item for item in body["data"]}
    assert set(by_symbol["BTCUSDT"]) == FIELDS
    assert by_symbol["NOPE"]["error"] == "No data yet" and by_symbol["NOPE"]["listingStatus"] is None
    assert by_symbol["OLDUSDT"]["error"] == "Data stale" and by_symbol["OLDUSDT"]["maxAgeSeconds"] == 60


def test_batch_without_symbols_returns_every_symbol(api: Api) -> None:
    api.put({f"S{i}USDT": record(f"S{i}USDT", 0) for i in range(700)})
    body = api.get("/funding/batch").json()
    assert body["total"] == body["found"] == 700 and body["missing"] == 0


def test_batch_limits(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    too_many = ",".join(f"S{i}" for i in range(MAX_BATCH_SYMBOLS + 1))
    r = api.get("/funding/batch", params={"symbols": too_many})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "Too many symbols"
    assert api.get("/funding/batch", params={"symbols": ",,"}).status_code == 400
    assert api.get("/funding/batch", params={"symbols": "A\x01"}).status_code == 400
    ok = api.get("/funding/batch", params={"symbols": ",".join(f"S{i}" for i in range(MAX_BATCH_SYMBOLS))})
    assert ok.status_code == 200 and ok.json()["total"] == MAX_BATCH_SYMBOLS


def test_health_healthy_with_a_few_stale_symbols(api: Api) -> None:
    fresh = {f"SYM{i}USDT": record(f"SYM{i}USDT", 0.5) for i in range(3)}
    api.put({"BTCUSDT": record("BTCUSDT", 0.5), "DELISTUSDT": record("DELISTUSDT", 3600), **fresh})
    r = api.get("/funding/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "healthy" and body["reasons"] == []
    assert body["staleSymbols"] == 1 and body["staleSymbolNames"] == ["DELISTUSDT"] and body["staleShare"] == 0.2
    assert body["websocketConnected"] and body["daemonAlive"] and body["symbolCount"] == 5
    assert body["oldestDataAgeSeconds"] >= 3600 and body["newestDataAgeSeconds"] < 5


@pytest.mark.parametrize("kw, symbols_age, reason", [
    ({"connected": False, "last_error": "no mark-price data for 10 s (watchdog)"}, 0,
     "websocket disconnected: no mark-price data for 10 s (watchdog)"),
    ({"heartbeat_age": 120}, 0, "daemon not running: last heartbeat 12"),
    ({"stopped": True, "connected": False}, 0, "daemon stopped"),
    ({}, 90, "newest data is 9"),
])
def test_health_says_why_it_is_unhealthy(api: Api, kw: dict, symbols_age: float, reason: str) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", symbols_age)}, **kw)
    r = api.get("/funding/health")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy"
    assert any(x.startswith(reason[:40]) for x in r.json()["reasons"]), r.json()["reasons"]


def test_dead_daemon_with_no_data_is_state_unavailable(api: Api) -> None:
    api.put({}, heartbeat_age=300)
    r = api.get("/funding/BTCUSDT")
    assert r.status_code == 503 and r.json()["detail"]["reason"] == "daemon not running"


def test_corrupt_file_keeps_the_last_good_snapshot_and_health_reports_it(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    tmp = api.path.with_name(".t")
    tmp.write_bytes(b'{"schemaVersion": 2, "funding_st')
    os.replace(tmp, api.path)
    written = statefile.identity(api.path)
    wait_until(lambda: api.server.cache.identity == written)
    assert api.get("/funding/BTCUSDT").status_code == 200
    health = api.get("/funding/health").json()
    assert health["stateReadError"] and any("invalid" in r for r in health["reasons"])
    assert "funding_state_readable 0.0" in api.get("/metrics").text
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    assert api.get("/funding/health").json()["stateReadError"] is None


def test_premium_index_is_binance_shaped(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0, mark="97000.10000000"),
             "BTCUSDT_261225": record("BTCUSDT_261225", 0, funding=None), "OLDUSDT": record("OLDUSDT", 100)})
    one = api.get("/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}).json()
    assert list(one) == ["symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "lastFundingRate",
                         "interestRate", "nextFundingTime", "time"]
    assert one["markPrice"] == "97000.10000000" and one["lastFundingRate"] == "-0.00012000"
    assert isinstance(one["time"], int) and one["interestRate"] == ""
    every = api.get("/fapi/v1/premiumIndex")
    assert {i["symbol"] for i in every.json()} == {"BTCUSDT", "BTCUSDT_261225"}
    assert every.headers["x-stale-symbols"] == "1"
    delivery = [i for i in every.json() if i["symbol"] == "BTCUSDT_261225"][0]
    assert delivery["lastFundingRate"] == "" and delivery["nextFundingTime"] == 0
    bad = api.get("/fapi/v1/premiumIndex", params={"symbol": "NOPE"})  # listing unknown: retryable, not -1121
    assert bad.status_code == 503 and bad.json()["code"] == -1001
    stale = api.get("/fapi/v1/premiumIndex", params={"symbol": "OLDUSDT"})
    assert stale.status_code == 503 and stale.json()["code"] == -1001


def test_a_real_binance_client_library_works_against_the_api(api: Api) -> None:
    from binance.error import ClientError
    from binance.um_futures import UMFutures

    api.put({"BTCUSDT": record("BTCUSDT", 0, mark="97000.10000000"), "ETHUSDT": record("ETHUSDT", 0)})
    put_reference(api, "BTCUSDT", "ETHUSDT")  # -1121 needs a known listing
    client = UMFutures(base_url=api.server.url)
    assert client.mark_price(symbol="BTCUSDT")["markPrice"] == "97000.10000000"
    assert {i["symbol"] for i in client.mark_price()} == {"BTCUSDT", "ETHUSDT"}
    with pytest.raises(ClientError) as info:
        client.mark_price(symbol="NOPEUSDT")
    assert info.value.status_code == 400 and info.value.error_code == -1121


def test_root_docs_and_openapi(api: Api) -> None:
    root = api.get("/").json()
    assert root["service"] and root["version"] and "/funding/health" in root["endpoints"]
    assert api.get("/docs").status_code == 200
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"SymbolFunding", "BatchResponse", "Health", "PremiumIndex", "ErrorBody"} <= set(schemas)
    assert set(schemas["SymbolFunding"]["properties"]) == FIELDS


def test_metrics_exposition(api: Api) -> None:
    api.put({"BTCUSDT": record("BTCUSDT", 0)})
    api.get("/funding/BTCUSDT")
    api.get("/funding/NOPE")
    text = api.get("/metrics").text
    for needle in ("funding_newest_data_age_seconds ", "funding_symbols 1.0", "funding_daemon_connected 1.0",
                   "funding_daemon_reconnects_total 0.0", "funding_daemon_messages_total 5.0",
                   'funding_daemon_malformed_total{kind="bad_json"} 2.0',
                   'funding_api_requests_total{route="/funding/{symbol}",status="200"} 1.0',
                   'funding_api_requests_total{route="/funding/{symbol}",status="503"} 1.0'):
        assert needle in text, needle


def test_reference_answers_carry_their_age_only_when_it_is_known(api: Api) -> None:
    """A reference file whose fetch time is unknown (null) is served without an age header, never an age of 0."""
    from volspike_funding.store import reference

    info = b'{"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "contractType": "PERPETUAL"}]}'
    path = api.path.with_name(".funding_reference.json")
    reference.write(path, reference.ReferenceData(info, None, [], time.time() - 30))
    wait_until(lambda: api.server.cache.view.reference is not None, 5)
    unknown, known = api.get("/fapi/v1/exchangeInfo"), api.get("/fapi/v1/fundingInfo")
    assert unknown.status_code == 200 and "X-Data-Age-Seconds" not in unknown.headers
    assert known.status_code == 200 and 30 <= float(known.headers["X-Data-Age-Seconds"]) < 60
