"""oi_realtime_poller against loopback fakes: budget, universe, USD notional, modes, alerts, cooldowns, faults."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from volspike_funding.binance.rest import BinanceRest
from volspike_funding.consumers.oi_alerts import OiAlertEngine, Sample
from volspike_funding.consumers.sinks import Outbox
from volspike_funding.consumers.oi_poller import OiPoller, poll_interval

from ..conftest import ROOT, scaled, scaled_s, wait_until
from .consumer_stack import World, open_world


@pytest.fixture
def world(stack, tmp_path: Path) -> Iterator[World]:
    with open_world(stack, tmp_path) as w:
        w.prod.liquid_universe = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT"]
        yield w


def poller(world: World, **env: str) -> OiPoller:
    settings = world.settings(OI_STATE_FILE=str(world.tmp / "oi.json"), **env)
    return OiPoller(settings, rest=BinanceRest(world.rest.url, retries=1, backoff_s=0.01))


def drain(p: OiPoller) -> None:
    for outbox in p.outboxes.values():
        outbox.close()


# -- interval and budget ----------------------------------------------------------------------------------------

def test_interval_follows_the_universe_and_keeps_the_budget() -> None:
    assert poll_interval(10, 2000, 5, 20) == (5.0, False)
    assert poll_interval(500, 2000, 5, 20) == (15.0, False)
    assert poll_interval(666, 2000, 5, 20) == (20.0, False)
    interval, over = poll_interval(1000, 2000, 5, 20)
    assert over and interval == 30.0 and 1000 * 60 / interval <= 2000  # stretched past the max, budget kept


# -- universe ---------------------------------------------------------------------------------------------------

def test_universe_from_the_backend_includes_excluded_symbols(world: World) -> None:
    """As the original: USDCUSDT is polled and posted like any symbol, only never alerted on."""
    p = poller(world)
    assert p.universe.refresh() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT"] and p.universe.source == "backend"
    drain(p)


def test_excluded_symbol_is_posted_but_never_alerted(world: World) -> None:
    world.prod.liquid_universe = ["USDCUSDT"]
    p = poller(world, FUNDING_SOURCE_MODE="ws")
    p.engine.observe("USDCUSDT", Sample(time.time() - 300, 100_000.0, 1.0), None)
    world.rest.open_interest["USDCUSDT"] = 150_000.0
    p.loop_once()
    drain(p)
    assert world.prod.oi_samples[-1]["data"][0]["symbol"] == "USDCUSDT" and world.prod.oi_alerts == []


def test_rows_without_open_interest_are_not_posted(world: World) -> None:
    world.prod.liquid_universe = ["BTCUSDT", "ETHUSDT"]
    world.rest.open_interest["ETHUSDT"] = 0.0
    p = poller(world, FUNDING_SOURCE_MODE="ws")
    p.loop_once()
    drain(p)
    assert [r["symbol"] for r in world.prod.oi_samples[-1]["data"]] == ["BTCUSDT"]


def test_universe_computed_locally_with_hysteresis(world: World) -> None:
    world.prod.liquid_universe = None  # the backend's route answers 503
    for name in world.stack.market.contracts:
        world.rest.quote_volume_24h[name] = 1e6
    world.rest.quote_volume_24h.update({"BTCUSDT": 5e6, "ETHUSDT": 4.5e6, "SOLUSDT": 3e6})
    p = poller(world)
    assert p.universe.refresh() == ["BTCUSDT", "ETHUSDT"] and p.universe.source == "computed locally"
    world.rest.quote_volume_24h.update({"ETHUSDT": 2.5e6, "SOLUSDT": 4.1e6})  # ETH stays above the exit level
    assert p.universe.refresh() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    world.rest.quote_volume_24h.update({"ETHUSDT": 1.9e6})
    assert p.universe.refresh() == ["BTCUSDT", "SOLUSDT"]
    drain(p)


def test_universe_refuses_to_collapse_and_keeps_the_last_good_one(world: World) -> None:
    p = poller(world)
    p.universe.refresh()
    world.prod.liquid_universe = ["BTCUSDT"]
    assert p.universe.refresh() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT"]
    world.prod.liquid_universe = []
    world.rest.fail("/fapi/v1/exchangeInfo", 503, count=5)
    assert p.universe.refresh() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT"]
    drain(p)


def test_empty_universe_at_start_waits_instead_of_crashing(world: World, caplog) -> None:
    world.prod.liquid_universe = None
    world.rest.fail("/fapi/v1/exchangeInfo", 503, count=10)
    p = poller(world)
    assert p.loop_once() == 30.0 and "universe is empty" in caplog.text
    drain(p)


# -- samples and USD notional -----------------------------------------------------------------------------------

def test_samples_carry_usd_notional_only_with_a_fresh_mark_price(world: World) -> None:
    world.rest.open_interest.update({"BTCUSDT": 1000.0, "ETHUSDT": 2000.0, "SOLUSDT": 3000.0})
    p = poller(world, FUNDING_SOURCE_MODE="ws")
    p.loop_once()
    drain(p)
    for backend in (world.prod, world.dev):
        (post,) = backend.oi_samples
        assert post["source"] == "realtime" and post["totalSymbols"] == 4 and post["timestamp"].endswith("Z")
        rows = {r["symbol"]: r for r in post["data"]}
        mark = rows["BTCUSDT"]["markPrice"]
        assert rows["BTCUSDT"]["openInterestUsd"] == pytest.approx(1000.0 * mark)
        assert mark == pytest.approx(world.stack.market.contracts["BTCUSDT"].mark, rel=0.01)
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 0  # ws mode: mark prices came from the local API


def test_unknown_mark_price_omits_usd_rather_than_zero(world: World) -> None:
    p = poller(world, FUNDING_SOURCE_MODE="ws", FUNDING_REST_FALLBACK="false",
               WS_FUNDING_API_URL="http://127.0.0.1:9/funding")
    p.loop_once()
    drain(p)
    rows = world.prod.oi_samples[0]["data"]
    assert rows and all(set(r) == {"symbol", "openInterest"} for r in rows)


def test_stale_mark_price_is_not_used(world: World, tmp_path: Path) -> None:
    from volspike_funding.api.server import ServerThread
    from ..api.test_api import put_state, record

    stale = world.settings(FUNDING_STATE_FILE=str(tmp_path / "st" / "s.json"))
    put_state(stale.state_file, {s: record(s, 900) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")})
    with ServerThread(stale) as api:
        p = poller(world, FUNDING_SOURCE_MODE="ws", FUNDING_REST_FALLBACK="false",
                   WS_FUNDING_API_URL=api.url + "/funding")
        p.loop_once()
        drain(p)
    assert all("markPrice" not in r for r in world.prod.oi_samples[0]["data"])


def test_validate_mode_makes_one_call_per_side_per_loop(world: World) -> None:
    p = poller(world, FUNDING_SOURCE_MODE="validate")
    p.loop_once()
    p.loop_once()
    drain(p)
    assert world.rest.counts["/fapi/v1/premiumIndex"] == 2 and p.source.local.calls == 2
    assert world.rest.counts["/fapi/v1/openInterest"] == 8


def test_rest_mode_uses_no_local_call(world: World) -> None:
    p = poller(world, FUNDING_SOURCE_MODE="rest")
    p.loop_once()
    drain(p)
    assert p.source.local.calls == 0 and world.rest.counts["/fapi/v1/premiumIndex"] == 1


def test_429_on_open_interest_pauses_the_loop_not_the_process(world: World) -> None:
    world.rest.fail("/fapi/v1/openInterest", 429, headers={"Retry-After": "60"})
    p = poller(world, FUNDING_SOURCE_MODE="ws")
    p.loop_once()
    drain(p)
    assert world.rest.counts["/fapi/v1/openInterest"] <= 4  # after the 429 nothing more was sent
    assert all(len(post["data"]) < 4 for post in world.prod.oi_samples)


def test_418_ban_is_logged_loudly(world: World, caplog) -> None:
    world.rest.fail("/fapi/v1/openInterest", 418, headers={"Retry-After": "300"})
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_FETCH_CONCURRENCY="1")
    p.loop_once()
    drain(p)
    assert any(r.levelno == logging.ERROR and "IP BAN" in r.getMessage() for r in caplog.records)


# -- alerts -----------------------------------------------------------------------------------------------------

def engine(world: World, backends=("PROD",), clock=time.time, **env: str) -> OiAlertEngine:
    return OiAlertEngine(world.settings(OI_STATE_FILE=str(world.tmp / "oi.json"), **env), list(backends), clock)


def feed(e: OiAlertEngine, points: list[tuple[float, float]], symbol: str = "BTCUSDT") -> list:
    alerts = []
    for t, oi in points:
        alerts += e.observe(symbol, Sample(1_800_000_000 + t, oi, 100.0 + t / 1000), -0.0001)
    return alerts


def test_each_timeframe_fires_on_its_edge(world: World) -> None:
    e = engine(world)
    flat = [(t, 1_000_000.0) for t in range(0, 3600, 20)]
    assert feed(e, flat) == []
    alerts = feed(e, [(3600, 1_040_000.0)])  # +4 % in 5 min, 15 min and 1 h: only 5 min crosses its 3 %
    assert [a.timeframe.label for a in alerts] == ["5 min"]
    a = alerts[0]
    assert a.direction == "UP" and a.payload["pctChange"] == pytest.approx(0.04)
    assert a.payload["absChange"] == 40_000.0 and a.payload["source"] == "oi_realtime_poller"
    assert a.payload["fundingRate"] == -0.0001 and "priceChange" in a.payload
    e.confirm(a, True)
    assert feed(e, [(3620, 1_045_000.0)]) == []        # still outside: no new alert (edge-triggered)
    alerts = feed(e, [(3640, 880_000.0)])              # -12 % against every baseline
    # 5 min flipped direction but is within its 600 s cooldown; the others cross for the first time.
    assert {x.timeframe.label for x in alerts} == {"15 min", "1 hour"}
    assert all(x.direction == "DOWN" for x in alerts)
    for x in alerts:
        e.confirm(x, True)
    again = feed(e, [(t, 1_000_000.0) for t in range(3660, 4200, 20)])
    # Back to flat is -3.8 % against the pump 5 minutes earlier: DOWN has its own cooldown (the original's rule).
    assert [(x.timeframe.label, x.direction) for x in again] == [("5 min", "DOWN")]


def test_cooldown_is_per_direction_pump_flat_dump_alerts_both(world: World) -> None:
    """The original's rule: +4 %, back to flat, then -4 % five minutes later alerts UP and then DOWN (cooldowns
    are per direction; one key per symbol and timeframe sent only UP)."""
    e = engine(world)
    seen = []
    points = ([(t, 1_000_000.0) for t in range(0, 320, 20)] + [(320, 1_040_000.0)]
              + [(t, 1_000_000.0) for t in range(340, 640, 20)] + [(640, 960_000.0)])
    for t, oi in points:
        for alert in feed(e, [(t, oi)]):
            e.confirm(alert, True)
            seen.append((t, alert.timeframe.label, alert.direction))
    assert [(label, d) for _, label, d in seen] == [("5 min", "UP"), ("5 min", "DOWN")]
    assert seen[1][0] - seen[0][0] < 600  # inside UP's cooldown


def test_a_ramp_dipping_under_the_min_delta_does_not_rearm(world: World) -> None:
    e = engine(world, OI_MIN_DELTA_CONTRACTS="5000")
    feed(e, [(t, 100_000.0) for t in range(0, 320, 20)])
    first = feed(e, [(320, 106_000.0)])          # +6 %, +6000 contracts: alert
    assert len(first) == 1
    e.confirm(first[0], True)
    # Still beyond 3 % against the moving baseline, but only +4,800 contracts: stays outside, no re-arm...
    assert feed(e, [(t, 106_000.0 - 100 * i) for i, t in enumerate(range(340, 620, 20))]) == []
    # ...so when the delta grows again nothing fires (the original fired only once on a ramp).
    assert feed(e, [(640, 110_000.0)]) == []


def test_min_delta_contracts_blocks_small_symbols(world: World) -> None:
    e = engine(world)
    feed(e, [(t, 10_000.0) for t in range(0, 400, 20)])
    assert feed(e, [(400, 11_000.0)]) == []  # +10 % but only 1000 contracts


def test_no_baseline_no_alert(world: World) -> None:
    e = engine(world)
    assert feed(e, [(0, 100_000.0), (200, 150_000.0)]) == []  # nothing near 5 min ago yet


def test_a_loop_at_full_concurrency_keeps_its_connections_quietly(world: World, caplog) -> None:
    """requests pools 10 connections; 20 parallel openInterest calls had urllib3 warn "Connection pool is full"
    about ten times a loop (the journal benchmark found it) and open new connections each time."""
    world.prod.liquid_universe = sorted(world.stack.market.contracts)[:120]
    caplog.set_level(logging.WARNING, logger="urllib3")
    app = OiPoller(world.settings(OI_STATE_FILE=str(world.tmp / "oi.json"), OI_FETCH_CONCURRENCY="20"))
    try:
        app.run(threading.Event(), once=True)
    finally:
        drain(app)
    assert world.rest.counts["/fapi/v1/openInterest"] > 20  # more than the 20 threads
    assert "Connection pool is full" not in caplog.text


def test_the_originals_lookback_windows_are_honoured(world: World) -> None:
    """An operator's old env file with OI_LOOKBACK_WINDOW_5MIN=120: the 5 min timeframe compares with 2 min ago
    (the default 300 s finds no baseline yet), and the longest lookback bounds the history kept."""
    points = [(t, 100_000.0) for t in range(0, 140, 20)] + [(140, 106_000.0)]
    assert feed(engine(world), points) == []  # default: nothing near 5 min ago
    e = engine(world, OI_LOOKBACK_WINDOW_5MIN="120", OI_LOOKBACK_WINDOW_60MIN="5400")
    assert [a.timeframe.label for a in feed(e, points)] == ["5 min"]
    assert e.history_s == 5400 + 120


def test_failed_post_is_retried_and_cooldown_persists_across_restart(world: World) -> None:
    e = engine(world)
    feed(e, [(t, 100_000.0) for t in range(0, 320, 20)])
    first = feed(e, [(320, 110_000.0)])
    assert len(first) == 1
    assert feed(e, [(340, 110_000.0)]) == []  # pending while the POST is in flight
    e.confirm(first[0], False)                 # the backend failed: nothing recorded
    retry = feed(e, [(360, 110_000.0)])
    assert len(retry) == 1
    e.confirm(retry[0], True)
    restarted = engine(world)
    feed(restarted, [(t, 100_000.0) for t in range(100, 380, 20)])
    assert feed(restarted, [(380, 100_000.0)]) == []   # back inside...
    assert feed(restarted, [(660, 112_000.0)]) == []   # ...and out again, but within the 600 s cooldown
    later = feed(restarted, [(t, 100_000.0) for t in range(700, 1000, 20)] + [(1000, 112_000.0)])
    assert [a.timeframe.label for a in later] == ["5 min", "15 min"]


def test_alerts_reach_both_backends_and_failures_are_retried(world: World) -> None:
    world.prod.liquid_universe = ["BTCUSDT"]
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_MIN_INTERVAL_SEC="1")
    p.engine.observe("BTCUSDT", Sample(time.time() - 300, 100_000.0, 100.0), None)
    world.rest.open_interest["BTCUSDT"] = 120_000.0
    world.dev.fail("/api/open-interest-alerts/ingest", 400)
    p.loop_once()
    # Drained, not merely received: DEV's refusal counts once its reply is read, and only then is the alert due again.
    assert p.outboxes["PROD"].drain(scaled(10)) and p.outboxes["DEV"].drain(scaled(10))
    assert len(world.prod.oi_alerts) == 1 and world.dev.counts["/api/open-interest-alerts/ingest"] == 1
    p.loop_once()  # DEV rejected it: it is due again for DEV only
    drain(p)
    assert len(world.prod.oi_alerts) == 1 and len(world.dev.oi_alerts) == 1
    alert = world.dev.oi_alerts[0]
    assert alert["direction"] == "UP" and alert["timeframe"] == "5 min" and "fundingRate" in alert


def test_slow_backend_does_not_delay_polling_and_drops_the_oldest(world: World, caplog) -> None:
    world.prod.fail("/api/market/open-interest/ingest", 200, count=50, delay_s=scaled(2.0))
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_POST_QUEUE_MAX="2")
    for _ in range(4):
        p.loop_once()
    received_while_polling = world.prod.counts["/api/market/open-interest/ingest"]
    dropped = p.outboxes["PROD"].dropped
    drain(p)
    assert received_while_polling <= 1  # four loops went by while PROD was still on its first POST
    assert dropped >= 1 and "PROD is slow: its queue is full" in caplog.text


def test_a_hung_dev_costs_prod_nothing(world: World) -> None:
    world.dev.fail("/api/market/open-interest/ingest", 200, count=1000, delay_s=30.0)  # DEV hangs
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_POST_QUEUE_MAX="3")
    for _ in range(10):
        p.loop_once()
    wait_until(lambda: len(world.prod.oi_samples) == 10)  # PROD received every batch
    assert p.outboxes["DEV"].dropped >= 6 and p.outboxes["PROD"].dropped == 0
    p.outboxes["PROD"].close()


def test_outbox_reports_drops_to_callbacks() -> None:
    outbox = Outbox("X", 1)
    ran: list[str] = []
    dropped: list[str] = []
    with outbox._cv:  # hold the queue so that the thread takes nothing before all three are in
        for name in ("a", "b", "c"):
            outbox.put(lambda name=name: ran.append(name), on_drop=lambda name=name: dropped.append(name))
    assert outbox.drain(5) and ran == ["c"] and dropped == ["a", "b"]
    outbox.close()


def test_an_alert_that_timed_out_is_never_sent_again(world: World) -> None:
    world.prod.liquid_universe = ["BTCUSDT"]
    world.prod.fail("/api/open-interest-alerts/ingest", 200, count=1, delay_s=scaled(1.5))  # answers after the timeout
    p = poller(world, FUNDING_SOURCE_MODE="ws", VOLSPIKE_POST_TIMEOUT_S=scaled_s(0.5), VOLSPIKE_API_URL_DEV="")
    p.engine.observe("BTCUSDT", Sample(time.time() - 300, 100_000.0, 100.0), None)
    world.rest.open_interest["BTCUSDT"] = 120_000.0
    p.loop_once()
    assert p.outboxes["PROD"].drain(10)
    for _ in range(3):
        p.loop_once()
    drain(p)
    assert world.prod.counts["/api/open-interest-alerts/ingest"] == 1  # once, though the client gave up


def test_cli_once_and_banner_mask_the_key(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "OI_STATE_FILE": str(tmp_path / "oi.json"),
           "FUNDING_STALE_AFTER_S": "5", "OI_UNIVERSE_PUBLISH_S": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "oi_realtime_poller.py"), "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "prod-secret-key" not in proc.stderr and "key ***" in proc.stderr and "budget 2000 req/min" in proc.stderr
    assert world.prod.oi_samples and world.prod.oi_samples[0]["totalSymbols"] == 4


def test_debug_log_never_shows_a_secret(world: World, tmp_path: Path) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "VOLSPIKE_API_URL_DEV": world.dev.url,
           "VOLSPIKE_API_KEY_DEV": "dev-secret-key", "OI_STATE_FILE": str(tmp_path / "oi.json"),
           "FUNDING_STALE_AFTER_S": "5", "FUNDING_LOG_LEVEL": "DEBUG", "OI_UNIVERSE_PUBLISH_S": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "oi_realtime_poller.py"), "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DEBUG urllib3" in proc.stderr and world.prod.oi_samples
    assert "prod-secret-key" not in proc.stderr and "dev-secret-key" not in proc.stderr


# -- publishing the liquid universe ------------------------------------------------------------------------------

def publishing_world(world: World) -> None:
    world.prod.liquid_universe = ["BTCUSDT", "SOLUSDT"]
    for name in world.stack.market.contracts:
        world.rest.quote_volume_24h[name] = 1e6
    # BTC stays (in the universe, above exit); SOL stays at 3 M (in it, above 2 M exit); ETH enters at 4.5 M;
    # DOGE at 3 M does not enter (not in it, under 4 M).
    world.rest.quote_volume_24h.update({"BTCUSDT": 9e6, "SOLUSDT": 3e6, "ETHUSDT": 4.5e6, "DOGEUSDT": 3e6})


def test_the_poller_publishes_the_liquid_universe_to_prod_and_to_dev_only_when_configured(world: World) -> None:
    publishing_world(world)
    world.dev.liquid_universe = ["DEVONLYUSDT"]
    p = poller(world, OI_UNIVERSE_PUBLISH_S="300")
    p.loop_once()
    drain(p)
    assert world.dev.universe_updates == [] and world.dev.liquid_universe == ["DEVONLYUSDT"]  # DEV's table kept
    (body,) = world.prod.universe_updates
    by_symbol = {s["symbol"]: s for s in body["symbols"]}
    assert set(by_symbol) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert by_symbol["ETHUSDT"]["enteredAt"] and by_symbol["BTCUSDT"]["enteredAt"] is None
    assert by_symbol["SOLUSDT"]["quoteVolume24h"] == 3e6 and body["updatedAt"].endswith("Z")
    assert world.prod.liquid_universe == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert not p.universe.publish_due()  # next one in 5 minutes
    both = poller(world, OI_UNIVERSE_PUBLISH_S="300", OI_UNIVERSE_PUBLISH_DEV="true")
    both.loop_once()
    drain(both)
    assert world.dev.liquid_universe == world.prod.liquid_universe == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_an_empty_or_collapsed_universe_is_never_published(world: World, caplog) -> None:
    publishing_world(world)
    world.rest.fail("/fapi/v1/ticker/24hr", 400)  # nothing can be computed
    p = poller(world, OI_UNIVERSE_PUBLISH_S="300")
    p.publish_universe()
    world.prod.liquid_universe = [f"SYN{i:03d}USDT" for i in range(8)] + ["BTCUSDT"]
    p.universe._published = float("-inf")
    p.publish_universe()  # 2 symbols would replace 9: collapsed
    drain(p)
    assert world.prod.universe_updates == [] and world.dev.universe_updates == []
    assert "not published: nothing could be computed" in caplog.text and "is under half of 9" in caplog.text


# -- issue 19: backends, outcomes, the fake's weight window ------------------------------------------------------

def test_a_backend_with_a_url_but_no_key_is_not_used(world: World, caplog) -> None:
    p = poller(world, FUNDING_SOURCE_MODE="ws", VOLSPIKE_API_KEY_DEV="")
    p.loop_once()
    p.loop_once()
    drain(p)
    assert [b.name for b in p.backends] == ["PROD"] and world.dev.counts == {} and world.prod.oi_samples
    warnings = [r.getMessage() for r in caplog.records if "is not used" in r.getMessage()]
    assert len(warnings) == 1 and "VOLSPIKE_API_KEY_DEV is empty" in warnings[0]


def test_a_timed_out_sample_chunk_is_logged_as_unknown_never_as_posted(world: World, caplog) -> None:
    caplog.set_level(logging.INFO)
    world.dev.fail("/api/market/open-interest/ingest", 200, count=1, delay_s=1.5)  # answers after the timeout
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_BATCH_TIMEOUT_S="0.5")
    p.loop_once()
    drain(p)
    assert "posted to PROD: OI samples, 4 of 4 rows" in caplog.text
    assert "posted to DEV" not in caplog.text
    assert "may have reached DEV: OI samples, 4 of 4 rows" in caplog.text and "not re-sent" in caplog.text
    assert world.dev.counts["/api/market/open-interest/ingest"] == 1


def test_fake_weight_window_is_the_utc_clock_minute_and_a_refusal_costs_weight(world: World) -> None:
    from volspike_funding.core.errors import RateLimited, RequestRejected

    now = [1_800_000_000.0 // 60 * 60 + 50]  # second 50 of a UTC minute
    world.rest.clock = lambda: now[0]
    world.rest.weight_minute, world.rest.used_weight = int(now[0] // 60), 2300
    slept: list[float] = []
    client = BinanceRest(world.rest.url, retries=0, sleep=slept.append, clock=lambda: now[0])
    client.premium_index_all()
    assert client.used_weight == 2310
    with pytest.raises(RequestRejected):
        client.open_interest("NOPEUSDT")  # 400 -1121 still costs its route's weight
    assert client.used_weight == 2311
    world.rest.fail("/fapi/v1/openInterest", 429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited):
        client.open_interest("BTCUSDT")
    assert client.used_weight == 2312  # the 429 carries the header and cost 1 too
    now[0] += 15  # second 5 of the next minute: a new window, not a sliding one
    waits_before = len(slept)
    client.exchange_info()
    assert client.used_weight == 1 and world.rest.total_weight == 13 and len(slept) == waits_before  # no stall


def test_ws_mode_fetches_a_few_lacking_symbols_one_by_one_and_bulk_only_when_cheaper(world: World) -> None:
    from volspike_funding.fake.market import SILENT_SYMBOL

    world.prod.liquid_universe = ["BTCUSDT", "ETHUSDT", "SOLUSDT", SILENT_SYMBOL]  # never on the stream
    p = poller(world, FUNDING_SOURCE_MODE="ws")
    before = world.rest.total_weight
    for _ in range(3):
        quotes = p.source.quotes(p.universe.refresh())
    assert quotes[SILENT_SYMBOL].source == "rest" and quotes[SILENT_SYMBOL].mark_price
    calls = [r.query for r in world.rest.requests if r.path == "/fapi/v1/premiumIndex"]
    assert calls == [{"symbol": SILENT_SYMBOL}] * 3 and world.rest.total_weight - before == 3  # not 3 x 10
    # Ten or more lacking (here: the local service is down): one bulk call is cheaper than ten singles.
    many = sorted(world.stack.market.contracts)[:12]
    dead = poller(world, FUNDING_SOURCE_MODE="ws", WS_FUNDING_API_URL="http://127.0.0.1:9/funding")
    assert all(q.source == "rest" for q in dead.source.quotes(many).values())
    assert [r.query for r in world.rest.requests if r.path == "/fapi/v1/premiumIndex"][3:] == [{}]
    few = dead.source.quotes(many[:3])  # the breaker skips the local service: three singles
    assert all(q.source == "rest" for q in few.values()) and world.rest.counts["/fapi/v1/premiumIndex"] == 7
    drain(p)
    drain(dead)


def test_the_loop_polls_the_universe_it_just_published_not_the_backends_previous_one(world: World) -> None:
    publishing_world(world)
    world.prod.fail("/api/market/open-interest/liquid-universe/update", 200, delay_s=1.0)  # lands after the loop
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_UNIVERSE_PUBLISH_S="300")
    p.loop_once()
    assert p.universe.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"] and p.universe.source == "published"
    wait_until(lambda: world.prod.oi_samples)
    assert {r["symbol"] for r in world.prod.oi_samples[0]["data"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    drain(p)


def test_a_hung_prod_never_delays_a_loop_nor_devs_samples(world: World) -> None:
    p = poller(world, FUNDING_SOURCE_MODE="ws", OI_UNIVERSE_REFRESH_S="0.1", VOLSPIKE_POST_TIMEOUT_S="3")
    p.loop_once()  # the first universe (nothing to poll without one)
    world.prod.fail("/api/market/open-interest/liquid-universe", 200, count=100, delay_s=2.5)  # PROD hangs
    world.prod.fail("/api/market/open-interest/ingest", 200, count=100, delay_s=2.5)
    took = []
    for _ in range(5):
        started = time.monotonic()
        p.loop_once()
        took.append(time.monotonic() - started)
        time.sleep(0.15)  # the universe is due again at every loop
    wait_until(lambda: len(world.dev.oi_samples) == 6)
    assert max(took) < 1.0, took  # each loop used to wait for PROD's universe GET (2.5 s)
    p.outboxes["DEV"].close()


def test_cli_once_publishes_the_universe_only_when_asked(world: World, tmp_path: Path) -> None:
    publishing_world(world)
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "VOLSPIKE_API_URL_DEV": world.dev.url,
           "VOLSPIKE_API_KEY_DEV": "dev-secret-key", "OI_STATE_FILE": str(tmp_path / "oi.json"),
           "FUNDING_STALE_AFTER_S": "5", "OI_UNIVERSE_PUBLISH_S": "300"}
    script = [sys.executable, str(ROOT / "oi_realtime_poller.py"), "--once"]
    proc = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert world.prod.universe_updates == [] and world.dev.universe_updates == [] and world.prod.oi_samples
    proc = subprocess.run(script + ["--publish-universe"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(world.prod.universe_updates) == 1 and world.dev.universe_updates == []



# -- issue 23: at most once across kill -9 and a damaged cooldown file ------------------------------------------

@pytest.mark.parametrize("damage", ["corrupt", "null", "deleted"])
def test_a_damaged_cooldown_file_is_kept_aside_and_holds_back_what_may_have_been_sent(world: World, damage: str,
                                                                                      caplog) -> None:
    from volspike_funding.store import consumer_status

    path = world.tmp / "oi.json"
    e = engine(world)
    consumer_status.write(consumer_status.status_path(path, "oi_poller"), "oi_poller", {}, {})  # it ran
    feed(e, [(t, 100_000.0) for t in range(0, 320, 20)])
    (first,) = feed(e, [(320, 110_000.0)])
    e.confirm(first, True)
    if damage == "deleted":
        path.unlink()
    else:
        path.write_text('{"outside": {"PROD|BTC' if damage == "corrupt" else "null")
    restarted = engine(world, clock=lambda: 1_800_000_000 + 400.0)
    feed(restarted, [(t, 100_000.0) for t in range(100, 380, 20)])
    assert feed(restarted, [(400, 112_000.0)]) == []  # without the guard: the same UP alert, 80 s after the first
    assert any(r.levelno == logging.ERROR and "held back" in r.getMessage() for r in caplog.records)
    assert len(list(world.tmp.glob("oi.json.unreadable-*"))) == (0 if damage == "deleted" else 1)
    # After the longest cooldown (1 h) from the start, alerts are judged as usual again.
    later = feed(restarted, [(t, 100_000.0) for t in range(3700, 4020, 20)] + [(4020, 112_000.0)])
    assert [a.timeframe.label for a in later] == ["5 min"] and path.exists()


KILLED_POLLER = """
import os, sys, time
sys.path.insert(0, os.environ["ROOT"])
from volspike_funding.core.settings import load_settings
from volspike_funding.consumers.oi_alerts import Sample
from volspike_funding.consumers.oi_poller import OiPoller
p = OiPoller(load_settings(dict(os.environ), components=("consumers", "oi")))
p.engine.observe("BTCUSDT", Sample(time.time() - 300, 100_000.0, 100.0), None)  # a baseline 5 min ago
p.loop_once()
print("drained" if all(o.drain(10) for o in p.outboxes.values()) else "busy", flush=True)
time.sleep(30)
"""


def test_kill_9_during_an_alert_post_never_sends_it_again(world: World, tmp_path: Path) -> None:
    world.prod.liquid_universe = ["BTCUSDT"]
    world.rest.open_interest["BTCUSDT"] = 120_000.0  # +20 %: an UP alert on the first loop
    world.prod.fail("/api/open-interest-alerts/ingest", 200, count=1, delay_s=20.0)  # PROD is slow to answer
    env = {**os.environ, "ROOT": str(ROOT), "VOLSPIKE_ENV_FILE": os.devnull,
           "BINANCE_REST_URL": world.rest.url, "WS_FUNDING_API_URL": world.stack.api.url + "/funding",
           "VOLSPIKE_API_URL": world.prod.url, "VOLSPIKE_API_KEY": "prod-secret-key",
           "OI_STATE_FILE": str(tmp_path / "oi.json"), "FUNDING_SOURCE_MODE": "ws", "OI_UNIVERSE_PUBLISH_S": "0"}
    route = "/api/open-interest-alerts/ingest"
    for run in range(2):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_POLLER], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            if run == 0:
                wait_until(lambda: world.prod.counts[route] == 1, 30)  # the POST is on the wire
            else:
                assert proc.stdout is not None and proc.stdout.readline() == "drained\n"  # all it had to send
                assert len(world.prod.oi_samples) == 2
        finally:
            proc.kill()  # SIGKILL: no handler, no flush, no answer awaited
            proc.wait(10)
    assert world.prod.counts[route] == 1  # before: the restart sent the same alert again


def test_cli_once_that_got_no_open_interest_at_all_exits_non_zero(world: World, tmp_path: Path) -> None:
    from volspike_funding.fake.http_fake import free_port

    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull,
           "BINANCE_REST_URL": f"http://127.0.0.1:{free_port()}", "BINANCE_REST_RETRIES": "0",
           "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "VOLSPIKE_API_URL": world.prod.url,
           "VOLSPIKE_API_KEY": "prod-secret-key", "OI_STATE_FILE": str(tmp_path / "oi.json"),
           "OI_UNIVERSE_PUBLISH_S": "0"}
    proc = subprocess.run([sys.executable, str(ROOT / "oi_realtime_poller.py"), "--once"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "got no open interest at all" in proc.stderr and "Traceback" not in proc.stderr
    assert world.prod.oi_samples == []


def test_the_rest_pool_holds_every_fetch_thread_so_a_loop_opens_no_new_connection(world: World, caplog) -> None:
    world.prod.liquid_universe = sorted(world.stack.market.contracts)[:25]
    world.rest.latency_s["/fapi/v1/openInterest"] = 0.05  # so that the 20 threads really are in flight together
    p = OiPoller(world.settings(OI_STATE_FILE=str(world.tmp / "oi.json"), FUNDING_SOURCE_MODE="ws",
                                OI_FETCH_CONCURRENCY="20"))
    for _ in range(5):
        p.loop_once()
    drain(p)
    # Never more than the pool holds (20 threads + 2), however many loops; before: ~10 new ones every loop (50).
    assert world.rest.connections <= 22 and "Connection pool is full" not in caplog.text


def test_a_dry_run_records_no_intent_in_the_cooldown_file(world: World) -> None:
    world.prod.liquid_universe = ["BTCUSDT"]
    settings = world.settings(OI_STATE_FILE=str(world.tmp / "oi.json"), FUNDING_SOURCE_MODE="ws")
    p = OiPoller(settings, rest=BinanceRest(world.rest.url, retries=1, backoff_s=0.01), dry_run=True)
    p.engine.observe("BTCUSDT", Sample(time.time() - 300, 100_000.0, 100.0), None)
    world.rest.open_interest["BTCUSDT"] = 120_000.0
    p.loop_once()
    drain(p)
    assert world.prod.oi_alerts == [] and json.loads((world.tmp / "oi.json").read_bytes()) == {}
