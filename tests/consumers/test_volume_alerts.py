"""hourly_volume_alert_dual_env against loopback fakes: rules, slots, updates, restarts, funding modes, faults."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from volspike_funding.consumers.sinks import ACCEPTED, REJECTED, UNCERTAIN, Backend, Telegram
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.store.comparison_log import Window, parse_line
from volspike_funding.core.errors import IpBanned, RateLimited, RequestRejected, Unavailable
from volspike_funding.fake.http_fake import HttpFake
from volspike_funding.fake.market import Market, fmt
from volspike_funding.consumers.volume_alerts import VolumeAlerts
from volspike_funding.consumers.volume_rules import (Candles, alert_text, fmt_volume, is_spike, pick_candles, slot_of)

from ..conftest import ROOT, scaled, scaled_s, wait_until
from .consumer_stack import World, open_world

HOUR = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def world(stack, tmp_path: Path) -> Iterator[World]:
    with open_world(stack, tmp_path) as w:
        w.rest.volumes["ETHUSDT"] = (1e6, 5e6, 3000.0, 3100.0)     # spike, bullish
        w.rest.volumes["BTCUSDT"] = (1e6, 2.9e6, 100.0, 90.0)      # ratio 2.9: no spike
        w.rest.volumes["SOLUSDT"] = (0.5e6, 2.5e6, 10.0, 9.0)      # ratio 5 but under 3M: no spike
        yield w


def at(world: World, moment: datetime) -> datetime:
    world.rest.now_ms = int(moment.timestamp() * 1000)
    return slot_of(moment)


class DrainedAlerts(VolumeAlerts):
    """The real app; each scan waits for its deliveries (they run on the receivers' own outbox threads)."""

    def scan(self, slot: datetime) -> list:  # type: ignore[override]
        alerts = super().scan(slot)
        assert self.drain(30)
        return alerts


def alerts_app(world: World, **env: str) -> VolumeAlerts:
    return DrainedAlerts(world.settings(**env), rest=BinanceRest(world.rest.url, retries=1, backoff_s=0.01))


# -- pure rules -------------------------------------------------------------------------------------------------

def kline(start: datetime, volume: float, o: float = 1.0, c: float = 2.0) -> list:
    t = int(start.timestamp() * 1000)
    return [t, str(o), "2", "0.5", str(c), "10", t + 3_599_999, str(volume), 1, "1", "1", "0"]


def test_candle_choice_at_top_of_hour_and_inside_it() -> None:
    rows = [kline(HOUR - timedelta(hours=2), 100), kline(HOUR - timedelta(hours=1), 400), kline(HOUR, 5)]
    top = pick_candles(rows, HOUR)
    assert (top.prev_volume, top.curr_volume, top.hour) == (100, 400, HOUR - timedelta(hours=1))
    inside = pick_candles(rows[1:], HOUR + timedelta(minutes=10))
    assert (inside.prev_volume, inside.curr_volume, inside.hour) == (400, 5, HOUR)
    assert pick_candles(rows[2:], HOUR + timedelta(minutes=10)) is None  # a new listing: no previous hour


def test_spike_rule_and_text() -> None:
    c = Candles(HOUR, 1e6, 3e6, 1.0, 1.1)
    assert is_spike(c, 3, 3e6) and not is_spike(c, 3.01, 3e6) and not is_spike(c, 3, 3.1e6)
    assert Candles(HOUR, 0, 5e6, 1, 1).ratio == 0 and not is_spike(Candles(HOUR, 0, 5e6, 1, 1), 3, 0)
    assert c.direction == "bullish" and Candles(HOUR, 1, 1, 2, 2).direction == "bearish"
    assert [fmt_volume(v) for v in (1.234e9, 4.561e6, 7890, 12.5)] == ["1.23B", "4.56M", "7.89K", "12.50"]
    assert alert_text("HALF_UPDATE", "1000PEPEUSDT", c) == "HALF-UPDATE: 1000PEPE hourly volume 3.00M (3.00× prev) — VOLUME SPIKE!"


# -- scans against the fakes ------------------------------------------------------------------------------------

def test_spike_goes_to_telegram_prod_and_dev_without_nulls(world: World) -> None:
    world.prod.oi_snapshots[("ETHUSDT", "2026-11-24T12:00:00Z")] = 40_000.0
    world.rest.open_interest["ETHUSDT"] = 50_000.0
    alerts = alerts_app(world).scan(at(world, HOUR + timedelta(minutes=10, seconds=3)))
    assert [a.symbol for a in alerts] == ["ETHUSDT"]
    assert [m["text"] for m in world.telegram.messages] == ["ETH hourly volume 5.00M (5.00× prev) — VOLUME SPIKE!"]
    assert world.telegram.messages[0]["chat_id"] == "4242"
    prod, dev = world.prod.volume_alerts[0], world.dev.volume_alerts[0]
    assert prod["alertType"] == "SPIKE" and prod["isUpdate"] is False and prod["candleDirection"] == "bullish"
    assert prod["detectionTime"] == "2026-11-24T12:10:00Z" and prod["hourTimestamp"] == "2026-11-24T12:00:00Z"
    assert prod["currentVolume"] == 5e6 and prod["previousVolume"] == 1e6 and prod["volumeRatio"] == 5.0
    assert prod["price"] == 3100.0 and prod["priceChange"] == pytest.approx(3100 / 3000 - 1)
    assert isinstance(prod["fundingRate"], float) and prod["timestamp"].endswith("Z")
    assert prod["oiChange"] == pytest.approx(0.25) and "oiChange" not in dev  # DEV had no hour-start value
    assert {r.query["limit"] for r in world.rest.requests if r.path == "/fapi/v1/klines"} == {"2"}


def test_top_of_hour_judges_the_closed_hour(world: World) -> None:
    alerts = alerts_app(world).scan(at(world, HOUR + timedelta(seconds=4)))
    assert [a.symbol for a in alerts] == ["ETHUSDT"]
    assert world.prod.volume_alerts[0]["hourTimestamp"] == "2026-11-24T11:00:00Z"
    assert {r.query["limit"] for r in world.rest.requests if r.path == "/fapi/v1/klines"} == {"3"}


def test_universe_is_trading_usdt_perpetuals(world: World) -> None:
    symbols = alerts_app(world).universe()
    assert "OLDCOINUSDT" not in symbols and "BTCBUSD" not in symbols and "BTCUSDT_261225" not in symbols
    assert "BTCUSDT" in symbols and len(symbols) == len(world.stack.market.contracts) - 1


def sent(world: World) -> list[str]:
    return [a["alertType"] for a in world.prod.volume_alerts]


def test_half_and_full_updates_survive_a_restart_without_duplicates(world: World) -> None:
    alerts_app(world).scan(at(world, HOUR + timedelta(minutes=10)))
    alerts_app(world).scan(at(world, HOUR + timedelta(minutes=15)))       # a restart: a new process, same file
    assert sent(world) == ["SPIKE"]
    app = alerts_app(world)
    app.scan(at(world, HOUR + timedelta(minutes=30)))
    app.scan(at(world, HOUR + timedelta(minutes=35)))
    assert sent(world) == ["SPIKE", "HALF_UPDATE"]
    assert world.prod.volume_alerts[1]["message"].startswith("HALF-UPDATE: ETH")
    alerts_app(world).scan(at(world, HOUR + timedelta(minutes=30)))       # restart, same slot again
    alerts_app(world).scan(at(world, HOUR + timedelta(hours=1, seconds=2)))
    assert sent(world) == ["SPIKE", "HALF_UPDATE", "FULL_UPDATE"]
    full = world.prod.volume_alerts[2]
    assert full["isUpdate"] is True and full["message"].startswith("UPDATE: ETH")
    assert full["hourTimestamp"] == "2026-11-24T12:00:00Z"
    assert len(world.telegram.messages) == 3


@pytest.mark.parametrize("first_minute, expected", [(25, ["SPIKE", "FULL_UPDATE"]), (55, ["SPIKE"])])
def test_no_half_update_after_minute_20_and_no_full_update_after_55(world: World, first_minute: int,
                                                                    expected: list[str]) -> None:
    app = alerts_app(world)
    app.scan(at(world, HOUR + timedelta(minutes=first_minute)))
    if first_minute < 30:
        app.scan(at(world, HOUR + timedelta(minutes=30)))
    app.scan(at(world, HOUR + timedelta(hours=1)))
    assert sent(world) == expected


def test_dry_run_sends_and_records_nothing(world: World) -> None:
    app = VolumeAlerts(world.settings(), dry_run=True)
    assert [a.symbol for a in app.scan(at(world, HOUR + timedelta(minutes=10)))] == ["ETHUSDT"]
    assert world.prod.volume_alerts == [] and world.telegram.messages == []
    assert json.loads((world.tmp / "alerts.json").read_bytes()) == {}  # written empty at start: nothing recorded
    alerts_app(world).scan(at(world, HOUR + timedelta(minutes=15)))
    assert sent(world) == ["SPIKE"]


# -- funding modes ----------------------------------------------------------------------------------------------

def comparison_records(caplog) -> list:
    return [record for r in caplog.records if (record := parse_line(r.getMessage())) is not None]


def test_validate_mode_compares_every_symbol_with_one_call_per_side(world: World, caplog) -> None:
    caplog.set_level(logging.INFO)
    app = alerts_app(world, FUNDING_SOURCE_MODE="validate")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    app.scan(at(world, HOUR + timedelta(minutes=15)))
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 2 and app.source.local.calls == 2
    app.source.comparisons.flush()  # as at a stop: the second scan came within the first's minute (wall clock)
    windows = [r for r in comparison_records(caplog) if isinstance(r, Window)]
    assert [w.scans for w in windows] == [1, 1]  # one line per scan or per minute: never one per symbol
    for window in windows:
        funding, mark = window.fields["fundingRate"], window.fields["markPrice"]
        assert funding["n"] == mark["n"] >= 25
        assert mark["m"] >= 0.9 * mark["n"]  # same simulated market on both sides
    assert world.prod.volume_alerts[0]["fundingRate"] == pytest.approx(
        world.stack.market.contracts["ETHUSDT"].funding, abs=1e-4)


def test_ws_mode_makes_no_rest_funding_call(world: World) -> None:
    app = alerts_app(world, FUNDING_SOURCE_MODE="ws")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 0 and app.source.local.calls == 1
    assert isinstance(world.prod.volume_alerts[0]["fundingRate"], float)


def test_rest_mode_never_asks_the_local_service(world: World) -> None:
    app = alerts_app(world, FUNDING_SOURCE_MODE="rest")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 1 and app.source.local.calls == 0


def test_ws_funding_enabled_false_is_rest_only_even_with_mode_ws(world: World, caplog) -> None:
    """The operator's kill switch in .volspike.env wins over an explicit mode, and says so at start."""
    caplog.set_level(logging.INFO)
    app = alerts_app(world, FUNDING_SOURCE_MODE="ws", WS_FUNDING_ENABLED="false")
    app.banner()
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 1 and app.source.local.calls == 0
    assert "WS_FUNDING_ENABLED=false: REST only" in caplog.text and "FUNDING_SOURCE_MODE=ws ignored" in caplog.text


def test_info_keeps_one_summary_per_scan_and_the_alerts_per_symbol_lines_are_debug(world: World, caplog) -> None:
    """A line per symbol per scan was ~28 MB of journal a day: at INFO only the summary, alerts and problems."""
    caplog.set_level(logging.INFO)
    app = alerts_app(world, FUNDING_SOURCE_MODE="rest")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    lines = [r.getMessage() for r in caplog.records if r.name == "volume_alerts"]
    assert [x for x in lines if x.startswith("BTCUSDT ")] == []  # no spike: DEBUG only
    assert any(x.startswith("ETHUSDT ") and "<<< SPIKE >>>" in x for x in lines)  # the alert stays
    assert sum(x.startswith("scan ") and " done in " in x for x in lines) == 1
    assert len(lines) <= 5, lines
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="volume_alerts")
    app.scan(at(world, HOUR + timedelta(minutes=15)))
    assert any(r.getMessage().startswith("BTCUSDT ") for r in caplog.records if r.levelno == logging.DEBUG)


def test_klines_failing_for_every_symbol_is_one_warning_per_scan(world: World, caplog) -> None:
    caplog.set_level(logging.INFO)
    world.rest.fail("/fapi/v1/klines", 400, count=10_000, body={"code": -1100, "msg": "Illegal characters"})
    app = alerts_app(world, FUNDING_SOURCE_MODE="rest")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    warnings = [r.getMessage() for r in caplog.records if r.name == "volume_alerts" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and re.match(r"klines failed for \d+ symbol\(s\) this scan, e\.g\. ", warnings[0])


def test_dead_local_service_falls_back_once_and_the_breaker_skips_it(world: World) -> None:
    app = alerts_app(world, FUNDING_SOURCE_MODE="ws", WS_FUNDING_API_URL="http://127.0.0.1:9/funding")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    app.scan(at(world, HOUR + timedelta(minutes=15)))
    assert app.source.local.calls == 1  # the second scan skipped it
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 2
    assert isinstance(world.prod.volume_alerts[0]["fundingRate"], float)


def test_dead_local_service_without_fallback_leaves_funding_unknown(world: World) -> None:
    app = alerts_app(world, FUNDING_SOURCE_MODE="ws", FUNDING_REST_FALLBACK="false",
                     WS_FUNDING_API_URL="http://127.0.0.1:9/funding")
    app.scan(at(world, HOUR + timedelta(minutes=10)))
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 0
    assert "fundingRate" not in world.prod.volume_alerts[0]  # unknown is omitted, never 0


def test_slow_local_service_times_out_without_retry(world: World) -> None:
    with HttpFake() as slow:
        slow.fail("/funding/batch", 200, count=5, delay_s=scaled(3.0), body={"data": []})
        app = alerts_app(world, FUNDING_SOURCE_MODE="ws", WS_FUNDING_API_URL=slow.url + "/funding",
                         WS_FUNDING_TIMEOUT_S=scaled_s(0.4))
        app.scan(at(world, HOUR + timedelta(minutes=10)))
        assert slow.counts["/funding/batch"] == 1
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 1  # the fallback filled in


def test_stale_local_data_is_replaced_by_rest(world: World, tmp_path: Path) -> None:
    from volspike_funding.api.server import ServerThread
    from ..api.test_api import put_state, record

    stale_settings = world.settings(FUNDING_STATE_FILE=str(tmp_path / "st" / "s.json"))
    put_state(stale_settings.state_file, {"ETHUSDT": record("ETHUSDT", 600, funding="0.00099000")})
    with ServerThread(stale_settings) as stale_api:
        app = alerts_app(world, FUNDING_SOURCE_MODE="ws", WS_FUNDING_API_URL=stale_api.url + "/funding")
        app.scan(at(world, HOUR + timedelta(minutes=10)))
    eth = world.prod.volume_alerts[0]
    assert eth["fundingRate"] != 0.00099 and world.rest.counts["/fapi/v1/premiumIndex"] == 1


# -- the REST client's faults -----------------------------------------------------------------------------------

def test_429_pauses_every_call_for_retry_after(world: World) -> None:
    world.rest.fail("/fapi/v1/klines", 429, headers={"Retry-After": "30"})
    client = BinanceRest(world.rest.url, retries=2, backoff_s=0.01)
    with pytest.raises(RateLimited) as info:
        client.klines("BTCUSDT", "1h", 2)
    assert info.value.retry_after == 30
    before = sum(world.rest.counts.values())
    with pytest.raises(RateLimited):
        client.exchange_info()  # another endpoint: paused too, nothing sent
    assert sum(world.rest.counts.values()) == before


def test_418_is_a_loud_pause(world: World, caplog) -> None:
    world.rest.fail("/fapi/v1/premiumIndex", 418, headers={"Retry-After": "120"})
    client = BinanceRest(world.rest.url, retries=2, backoff_s=0.01)
    with pytest.raises(IpBanned):
        client.premium_index_all()
    assert any(r.levelno == logging.ERROR and "IP BAN" in r.getMessage() for r in caplog.records)
    with pytest.raises(IpBanned):
        client.klines("BTCUSDT", "1h", 2)


def test_5xx_and_timeouts_are_retried_other_4xx_never(world: World) -> None:
    world.rest.fail("/fapi/v1/exchangeInfo", 503, count=2)
    client = BinanceRest(world.rest.url, retries=3, backoff_s=0.01)
    assert client.exchange_info()["symbols"] and world.rest.counts["/fapi/v1/exchangeInfo"] == 3
    world.rest.fail("/fapi/v1/exchangeInfo", 502, count=10)
    with pytest.raises(Unavailable):
        client.exchange_info()
    with pytest.raises(RequestRejected) as info:
        client.klines("NOPEUSDT", "1h", 2)
    assert info.value.code == -1121 and world.rest.counts["/fapi/v1/klines"] == 1
    world.rest.fail("/fapi/v1/ticker/24hr", 200, delay_s=scaled(1.0))
    fast = BinanceRest(world.rest.url, retries=1, backoff_s=0.01, timeout=scaled(0.2))
    assert fast.ticker_24hr_all() and world.rest.counts["/fapi/v1/ticker/24hr"] == 2


def test_scan_survives_rate_limiting(world: World, caplog) -> None:
    world.rest.fail("/fapi/v1/premiumIndex", 429, headers={"Retry-After": "5"})
    app = alerts_app(world, FUNDING_SOURCE_MODE="validate")
    alerts = app.scan(at(world, HOUR + timedelta(minutes=10)))
    assert [a.symbol for a in alerts] == ["ETHUSDT"]  # funding from the local service, REST paused
    world.rest.fail("/fapi/v1/klines", 429, headers={"Retry-After": "30"})
    caplog.clear()
    caplog.set_level(logging.INFO)
    fresh_client = alerts_app(world, FUNDING_SOURCE_MODE="validate")
    assert fresh_client.scan(at(world, HOUR + timedelta(minutes=15))) == []
    assert caplog.text.count("HTTP 429 on /fapi/v1/klines") == 1  # one line, not one per symbol
    assert "klines failed" not in caplog.text, caplog.text
    assert int(re.search(r"(\d+) without candles", caplog.text).group(1)) > 0


def test_weight_header_slows_down_near_the_limit(world: World) -> None:
    slept: list[float] = []
    client = BinanceRest(world.rest.url, sleep=slept.append)
    world.rest.used_weight = 2000
    client.exchange_info()
    client.exchange_info()
    assert client.used_weight >= 2000 and slept and slept[0] < 1
    world.rest.used_weight = 2380
    client.exchange_info()
    client.exchange_info()
    assert max(slept) > 0.05 and max(slept) <= 60.1


# -- backends ---------------------------------------------------------------------------------------------------

VALID_ALERT = {"symbol": "XUSDT", "asset": "X", "currentVolume": 5e6, "previousVolume": 1e6, "volumeRatio": 5.0,
               "message": "X hourly volume 5.00M", "timestamp": "2026-11-24T12:10:03.000Z",
               "hourTimestamp": "2026-11-24T12:00:00.000Z"}


def test_fake_backend_is_as_strict_as_the_real_one(world: World) -> None:
    good = Backend("PROD", world.prod.url, "prod-secret-key", sleep=lambda s: None)
    route = "/api/volume-alerts/ingest"
    assert good.post(route, VALID_ALERT) == ACCEPTED
    for drift in ({"fundingRate": "0.0001"}, {"timestamp": "2026-11-24 12:10"}, {"alertType": "SPIKY"},
                  {"candleDirection": "up"}, {"isUpdate": "false"}, {"price": None}):
        assert good.post(route, {**VALID_ALERT, **drift}) == REJECTED, drift
    assert good.post(route, {k: v for k, v in VALID_ALERT.items() if k != "asset"}) == REJECTED
    assert good.post("/api/open-interest-alerts/ingest", {"symbol": "X", "direction": "SIDEWAYS", "baseline": 1,
                                                          "current": 2}) == REJECTED
    assert good.post("/api/market/open-interest/ingest", {"data": [{"symbol": "X", "openInterest": "5"}]}) == REJECTED


def test_at_most_once_only_what_surely_did_not_arrive_is_retried(world: World, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    route, count = "/api/volume-alerts/ingest", lambda: world.prod.counts["/api/volume-alerts/ingest"]
    no_wait = {"sleep": lambda s: None}
    wrong = Backend("PROD", world.prod.url, "wrong-key-123456", **no_wait)
    assert wrong.post(route, {"symbol": "X"}) == REJECTED and count() == 1  # 401: never retried
    good = Backend("PROD", world.prod.url, "prod-secret-key", timeout=scaled(0.5), **no_wait)
    assert good.post(route, {**VALID_ALERT, "fundingRate": None}) == REJECTED and count() == 2  # 400 on null
    world.prod.fail(route, 500)
    assert good.post(route, VALID_ALERT) == UNCERTAIN and count() == 3  # 5xx after the body: not re-sent
    world.prod.fail(route, 200, delay_s=scaled(1.5))
    assert good.post(route, VALID_ALERT) == UNCERTAIN and count() == 4  # answered after our timeout: not re-sent
    world.prod.fail(route, 503, count=2, headers={"Retry-After": "1"})
    assert good.post(route, VALID_ALERT) == ACCEPTED and count() == 7  # "not now, retry": it did not arrive
    refused = Backend("PROD", "http://127.0.0.1:9", "prod-secret-key", **no_wait)
    assert refused.post(route, VALID_ALERT) == REJECTED  # refused 3 times: nothing was ever sent
    assert good.post(route, VALID_ALERT, what="volume SPIKE XUSDT") == ACCEPTED
    assert "posted to PROD: volume SPIKE XUSDT" in caplog.text  # the line operators' runbooks grep for
    for secret in ("wrong-key-123456", "prod-secret-key", world.telegram.token):
        assert secret not in caplog.text


def test_telegram_honours_retry_after_and_never_resends_a_timed_out_message(world: World) -> None:
    tg = Telegram(world.telegram.url, world.telegram.token, "42", timeout=scaled(0.5), sleep=lambda s: None)
    path = f"/bot{world.telegram.token}/sendMessage"
    world.telegram.fail(path, 429, body={"ok": False, "error_code": 429, "description": "Too Many Requests: retry "
                                         "after 3", "parameters": {"retry_after": 3}})
    assert tg.send("hello") == ACCEPTED and world.telegram.counts[path] == 2
    world.telegram.fail(path, 200, delay_s=scaled(1.5))
    assert tg.send("slow") == UNCERTAIN and world.telegram.counts[path] == 3


def test_a_hung_backend_or_telegram_never_stretches_a_scan(world: World) -> None:
    world.dev.fail("/api/volume-alerts/ingest", 200, count=10, delay_s=20.0)
    world.telegram.fail(f"/bot{world.telegram.token}/sendMessage", 200, count=10, delay_s=20.0)
    app = VolumeAlerts(world.settings(), rest=BinanceRest(world.rest.url, retries=1, backoff_s=0.01))
    started = time.monotonic()
    app.scan(at(world, HOUR + timedelta(minutes=10, seconds=1)))
    scan_took = time.monotonic() - started
    wait_until(lambda: len(world.prod.volume_alerts) == 1)  # PROD got it while DEV and Telegram hang
    assert scan_took < 20 and app.outboxes["DEV"].pending == 1 and app.outboxes["Telegram"].pending == 1
    app.close()


def test_cli_once_with_now_against_the_fakes(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "TELEGRAM_API_URL": world.telegram.url,
           "TELEGRAM_TOKEN": world.telegram.token, "CHAT_ID": "1", "FUNDING_STALE_AFTER_S": "5",
           "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json")}
    at(world, HOUR + timedelta(minutes=10, seconds=1))
    proc = subprocess.run([sys.executable, str(ROOT / "hourly_volume_alert_dual_env.py"), "--once", "--now",
                           "2026-11-24T12:10:01Z"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [a["symbol"] for a in world.prod.volume_alerts] == ["ETHUSDT"]
    assert "prod-secret-key" not in proc.stderr and world.telegram.token not in proc.stderr
    assert "mode=validate" in proc.stderr and "next scan" not in proc.stderr
    assert json.loads((tmp_path / "a.json").read_text())


def test_cli_usage_errors(tmp_path: Path) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull}
    script = str(ROOT / "hourly_volume_alert_dual_env.py")
    for args in (["--now", "2026-11-24T12:00:00Z"], ["--once", "--now", "yesterday"]):
        proc = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_an_overrun_catches_up_top_and_half_hour_slots_and_says_what_it_skipped(world: World, caplog) -> None:
    """The scheduler with a clock that jumps 20 minutes during the first scan (a very slow Binance)."""
    import threading

    start = (HOUR + timedelta(minutes=54, seconds=59, microseconds=900_000)).timestamp()
    clock = {"now": start}
    stop = threading.Event()
    app = DrainedAlerts(world.settings(), rest=BinanceRest(world.rest.url), clock=lambda: clock["now"])
    real_scan, scanned = app.scan, []

    def scan(slot: datetime) -> list:
        scanned.append(slot.strftime("%H:%M"))
        at(world, slot + timedelta(seconds=5))
        result = real_scan(slot)
        clock["now"] = max(clock["now"], slot.timestamp()) + (20 * 60 if len(scanned) == 1 else 1)
        if len(scanned) == 3:
            stop.set()
        return result

    app.scan = scan  # type: ignore[method-assign]
    caplog.set_level(logging.INFO)
    app.run_forever(stop)
    assert scanned == ["12:55", "13:00", "13:15"]
    assert "catching up slot 2026-11-24T13:00:00Z" in caplog.text
    assert "slot 2026-11-24T13:05:00Z skipped" in caplog.text and "slot 2026-11-24T13:10:00Z skipped" in caplog.text


def api_matches_market(api_url: str, market: Market) -> bool:
    """Every perpetual's funding rate and mark price in the API's answer are the market's current ones."""
    import requests

    served = {d["symbol"]: d for d in requests.get(api_url + "/funding/batch", timeout=5).json()["data"]}
    return all(c.symbol in served and served[c.symbol]["fundingRate"] == float(fmt(c.funding))
               and served[c.symbol]["markPrice"] == float(fmt(c.mark))
               for c in market.contracts.values() if c.funding is not None)


def test_a_real_validate_mode_log_feeds_the_report(world: World, tmp_path: Path) -> None:
    """End to end: the alert script in validate mode against the fakes; its own stderr log into the report."""
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "FUNDING_SOURCE_MODE": "validate",
           "FUNDING_STALE_AFTER_S": "5", "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json")}
    log_file = tmp_path / "alerts.log"
    # The script reads REST and then the API a moment later; a funding jump in between (2e-5 > the 1e-5
    # tolerance) would be a real mismatch. Hold the market still and wait until the API serves the still market.
    with world.stack.market.still() as market, log_file.open("w") as sink:
        wait_until(lambda: api_matches_market(world.stack.api.url, market), 15)
        for minute in (5, 10, 15):
            at(world, HOUR + timedelta(minutes=minute, seconds=1))
            proc = subprocess.run([sys.executable, str(ROOT / "hourly_volume_alert_dual_env.py"), "--once", "--dry-run",
                                   "--now", f"2026-11-24T12:{minute:02d}:01Z"], env=env, stderr=sink, timeout=60)
            assert proc.returncode == 0
    report = subprocess.run([sys.executable, str(ROOT / "validate_funding_comparison.py"), "--json", str(log_file)],
                            capture_output=True, text=True, timeout=60, env=env)
    result = json.loads(report.stdout)
    assert report.returncode == 2 and result["verdict"] == "INSUFFICIENT DATA"  # minutes, not 24 h
    n = len(world.stack.market.contracts) - 1
    assert result["fields"]["fundingRate"]["comparisons"] == 3 * n
    assert result["fields"]["fundingRate"]["matchRate"] == 1.0 and result["fields"]["markPrice"]["matchRate"] == 1.0
    assert result["availability"]["volume_alerts"]["scans"] == 3 and result["unparseableLines"] == 0


def test_debug_log_never_shows_a_secret(world: World, tmp_path: Path) -> None:
    """At DEBUG urllib3 logs every request line, and Telegram's carries the bot token."""
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "VOLSPIKE_API_URL_DEV": world.dev.url,
           "VOLSPIKE_API_KEY_DEV": "dev-secret-key", "TELEGRAM_API_URL": world.telegram.url,
           "TELEGRAM_TOKEN": world.telegram.token, "CHAT_ID": "1", "FUNDING_STALE_AFTER_S": "5",
           "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json"), "FUNDING_LOG_LEVEL": "DEBUG"}
    at(world, HOUR + timedelta(minutes=10, seconds=1))
    proc = subprocess.run([sys.executable, str(ROOT / "hourly_volume_alert_dual_env.py"), "--once", "--now",
                           "2026-11-24T12:10:01Z"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert world.telegram.messages and "DEBUG urllib3" in proc.stderr and "/bot***" in proc.stderr
    for secret in ("prod-secret-key", "dev-secret-key", world.telegram.token):
        assert secret not in proc.stderr


@pytest.mark.parametrize("damage", ["corrupt", "null", "deleted"])
def test_a_damaged_dedupe_file_is_kept_aside_and_the_hour_is_not_sent_again(world: World, damage: str,
                                                                             caplog) -> None:
    book = world.tmp / "alerts.json"
    alerts_app(world).scan(at(world, HOUR + timedelta(minutes=10)))
    assert sent(world) == ["SPIKE"]
    if damage == "deleted":
        book.unlink()
    else:
        book.write_text("{\"ETHUSDT|2026-11-24T12:0" if damage == "corrupt" else "null")

    def restarted(moment: datetime) -> VolumeAlerts:
        return DrainedAlerts(world.settings(), rest=BinanceRest(world.rest.url, retries=1, backoff_s=0.01),
                             clock=lambda: moment.timestamp())

    moment = HOUR + timedelta(minutes=15)
    app = restarted(moment)
    app.scan(at(world, moment))
    app.scan(at(world, HOUR + timedelta(hours=1, seconds=2)))  # the hour's FULL_UPDATE: unknown whether its SPIKE went
    assert sent(world) == ["SPIKE"]  # without the guard: SPIKE sent again at :15 for the same hour
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "held back" in r.getMessage()]
    assert len(errors) == 1
    aside = list(world.tmp.glob("alerts.json.unreadable-*"))
    assert (len(aside) == 1 and "kept aside" in errors[0]) if damage != "deleted" else "deleted" in errors[0]
    nxt = HOUR + timedelta(hours=1, minutes=10)
    app.scan(at(world, nxt))  # the next hour is served as usual
    assert sent(world) == ["SPIKE", "SPIKE"] and world.prod.volume_alerts[1]["hourTimestamp"] == "2026-11-24T13:00:00Z"


def test_cli_once_that_got_no_data_at_all_exits_non_zero(world: World, tmp_path: Path) -> None:
    from volspike_funding.fake.http_fake import free_port

    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull,
           "BINANCE_REST_URL": f"http://127.0.0.1:{free_port()}", "BINANCE_REST_RETRIES": "0",
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json")}
    proc = subprocess.run([sys.executable, str(ROOT / "hourly_volume_alert_dual_env.py"), "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "judged no symbol at all" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("started, first", [((0, 3), "13:00"), ((4, 58), "13:00"), ((7, 0), "13:05"),
                                            ((9, 55), "13:10"), ((30, 1), "13:30")])
def test_a_restart_catches_up_the_slot_it_missed(world: World, started: tuple[int, int], first: str) -> None:
    """A restart at 13:00-13:04 used to wait for 13:05 and lose the hour's :00 scan (the original scanned at start);
    a slot without updates is not caught up in its last seconds (the next one is due)."""
    import threading

    clock = {"now": (HOUR + timedelta(hours=1, minutes=started[0], seconds=started[1])).timestamp()}
    stop = threading.Event()
    app = DrainedAlerts(world.settings(), rest=BinanceRest(world.rest.url), clock=lambda: clock["now"])
    assert app._start_slot().strftime("%H:%M") == first
    if first != "13:00":
        return
    scanned: list[str] = []

    def scan(slot: datetime) -> list:
        scanned.append(slot.strftime("%H:%M"))
        result = DrainedAlerts.scan(app, slot)
        stop.set()
        return result

    app.scan = scan  # type: ignore[method-assign]
    at(world, HOUR + timedelta(hours=1, seconds=2))
    app.run_forever(stop)  # scans at once: the slot's time has passed
    assert scanned == ["13:00"] and (world.tmp / "volume_alerts.status.json").exists()
    assert app._start_slot().strftime("%H:%M") == "13:05"  # a second restart: 13:00 was scanned already
