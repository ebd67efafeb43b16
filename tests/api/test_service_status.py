"""``/funding/health`` and ``/metrics`` from one :class:`ServiceStatus`: the verdicts as pure functions of a view and
an instant (no server, no clock), and a scrape that agrees with the health answer of the same view."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from volspike_funding.api.metrics import StateCollector
from volspike_funding.api.service_status import HealthLimits, ServiceStatus
from volspike_funding.core.errors import StateUnreadable
from volspike_funding.store import daemon_status, statefile
from volspike_funding.store.view import StateCache, View

NOW = 1_791_382_993.0
LIMITS = HealthLimits(stale_after_s=60)


def rec(symbol: str, age: float) -> dict[str, Any]:
    return {"symbol": symbol, "markPrice": 100.5, "indexPrice": 100.4, "estimatedSettlePrice": None,
            "fundingRate": 0.0001, "nextFundingTime": 1795507200000, "eventTime": int((NOW - age) * 1000),
            "updatedAt": NOW - age, "binance": "100.5|100.4||0.0001"}


def document(ages: dict[str, float], *, beat_age: float = 0.0, connected: bool = True, **extra: Any) -> dict:
    connection = {**daemon_status.new_connection_status("wss://x"), "connected": connected,
                  "last_connected_time": NOW - 100 if connected else None, "messages_received": 7}
    doc = statefile.build_document({s: rec(s, a) for s, a in ages.items()}, connection, {}, now=NOW - beat_age,
                                   heartbeat_s=5, started_at=NOW - 100, clock=extra.pop("clock", None))
    return {**doc, **extra}


def status_of(doc: dict, limits: HealthLimits = LIMITS) -> ServiceStatus:
    view = View().read(statefile.StateSnapshot(doc, doc["funding_state"], NOW))
    return ServiceStatus.of(view, NOW, limits)


def test_healthy() -> None:
    status = status_of(document({"BTCUSDT": 0.5, "ETHUSDT": 2.0, "A1USDT": 1, "A2USDT": 1, "OLDUSDT": 600}))
    assert status.healthy and status.alive and status.connected and status.reasons == []
    body = status.health_body()
    assert body["status"] == "healthy" and body["staleSymbols"] == 1 and body["staleSymbolNames"] == ["OLDUSDT"]
    assert body["newestDataAgeSeconds"] == 0.5 and body["oldestDataAgeSeconds"] == 600
    assert body["uptimeSeconds"] == 100 and body["messagesReceived"] == 7 and body["clockSkewSeconds"] is None


@pytest.mark.parametrize("doc, reason", [
    (document({"BTCUSDT": 1}, beat_age=30), "daemon not running: last heartbeat 30 s ago"),
    (document({"BTCUSDT": 1}, connected=False), "websocket not connected: not connected yet"),
    (document({}), "no data yet"),
    (document({"BTCUSDT": 61}), "newest data is 61.0 s old (max 60 s)"),
    (document({"A1USDT": 1, "A2USDT": 100}), "1 of 2 symbols are stale (50%, max 25%)"),
    (document({"BTCUSDT": 1}, clock={"skewMs": -7000, "samples": 9}),
     "this host's clock is +7.0 s off Binance's event times (max 5 s): check NTP (timedatectl)"),
    (document({"BTCUSDT": 1}, storeError="OOM command not allowed"),
     "OOM command not allowed: the daemons cannot report (their data and status are not stored)"),
    (document({"BTCUSDT": 1}, stopped_at=NOW), "daemon stopped"),
])
def test_each_unhealthy_verdict_says_why(doc: dict, reason: str) -> None:
    status = status_of(doc)
    assert not status.healthy and reason in status.reasons, status.reasons
    assert status.health_body()["status"] == "unhealthy"


def test_a_dead_daemons_clock_is_unknown_not_its_last_measurement() -> None:
    alive = status_of(document({"BTCUSDT": 1}, clock={"skewMs": -7000, "samples": 9}))
    dead = status_of(document({"BTCUSDT": 1}, beat_age=300, clock={"skewMs": -7000, "samples": 9}))
    assert alive.health_body()["clockSkewSeconds"] == -7.0
    assert dead.clock_skew_ms is None and dead.health_body()["clockSkewSeconds"] is None
    assert not any("clock" in r for r in dead.reasons)


def test_no_state_at_all() -> None:
    status = ServiceStatus.of(View().failed(StateUnreadable("missing", "no file")), NOW, LIMITS)
    body = status.health_body()
    assert body["reasons"] == ["state unavailable: missing"] and body["newestDataAgeSeconds"] is None
    assert body["symbolCount"] == 0 and body["uptimeSeconds"] is None and not body["daemonAlive"]


def scrape(collector: StateCollector) -> dict[str, float]:
    return {f"{s.name}{s.labels or ''}": s.value for family in collector.collect() for s in family.samples}


@pytest.mark.parametrize("doc", [
    document({"BTCUSDT": 0.5, "OLDUSDT": 600}),
    document({"A1USDT": 1, "A2USDT": 100}),
    document({"BTCUSDT": 1}, beat_age=300, clock={"skewMs": -7000, "samples": 9}),
    document({}, connected=False),
], ids=["healthy", "too-many-stale", "dead", "not-connected"])
def test_a_scrape_and_a_health_answer_of_one_state_agree(tmp_path: Path, doc: dict) -> None:
    shift = time.time() - NOW  # a scrape reads today's clock: move the state to today
    doc = {**doc, "heartbeat_at": doc["heartbeat_at"] + shift}
    for record in doc["funding_state"].values():
        record["updatedAt"] += shift
    path = tmp_path / ".funding_state.json"
    path.write_bytes(statefile.encode(doc))
    cache = StateCache(path)
    cache.refresh()
    health = ServiceStatus.of(cache.view, time.time(), LIMITS).health_body()
    metrics = scrape(StateCollector(cache, LIMITS))
    assert metrics["funding_healthy"] == (health["status"] == "healthy")
    assert metrics["funding_daemon_alive"] == health["daemonAlive"]
    assert metrics["funding_daemon_connected"] == health["websocketConnected"]
    assert metrics["funding_stale_symbols"] == health["staleSymbols"]
    assert metrics["funding_symbols"] == health["symbolCount"]
    assert ("funding_clock_skew_seconds" in metrics) == (health["clockSkewSeconds"] is not None)
    assert ("funding_newest_data_age_seconds" in metrics) == (health["newestDataAgeSeconds"] is not None)


def test_streams_held_back_or_left_out_are_warnings_and_gauges(tmp_path: Path) -> None:
    """Issues 23.4 and 23.5: health said nothing of refused SUBSCRIBEs nor of symbols beyond 1,023 streams."""
    streams = {"subscriptionsFailing": "no reply to SUBSCRIBE 3 within 10 s (200 streams); asked again in 10 s "
                                       "(failure 1)", "heldStreams": 200, "leftOutStreams": 77,
               "leftOutExamples": ["AAPLUSDT", "AMZNUSDT"]}
    doc = {**document({"BTCUSDT": 1}), "streams": streams}
    status = status_of(doc)
    assert status.healthy and status.warnings == [
        "per-symbol subscriptions failing: no reply to SUBSCRIBE 3 within 10 s (200 streams); asked again in 10 s "
        "(failure 1); 200 symbols get no data until Binance accepts them",
        "77 listed symbols are not served: they need a stream of their own and one connection carries 1,023 "
        "besides the all-market stream (AAPLUSDT, AMZNUSDT)"]
    path = tmp_path / ".funding_state.json"
    path.write_bytes(statefile.encode({**doc, "heartbeat_at": time.time()}))
    cache = StateCache(path)
    cache.refresh()
    metrics = scrape(StateCollector(cache, LIMITS))
    assert metrics["funding_subscriptions_failing"] == 200 and metrics["funding_streams_left_out"] == 77
