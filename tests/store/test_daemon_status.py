"""The daemon's status keys as readers see them: what the daemon writes reads back as written; anything else reads as
unknown, never as a made-up truth (pure: no files, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from volspike_funding.store import daemon_status, statefile
from volspike_funding.store.daemon_status import DaemonStatus

NOW = 1_791_382_993.0


def written(**connection: Any) -> dict[str, Any]:
    status = {**daemon_status.new_connection_status("wss://fstream.binance.com/market/stream"), **connection}
    counters = {"frames": 3, "unlisted": 2, "future_overridden": 1, "malformed": {"bad_json": 4},
                "other_kinds": {"coin_m": 30}}
    return statefile.build_document({}, status, counters, now=NOW, heartbeat_s=5, started_at=NOW - 60,
                                    clock={"skewMs": -12.5, "samples": 60},
                                    reference={"lastError": "HTTP 429", "perSymbolStreams": 2})


def test_what_the_daemon_writes_reads_back() -> None:
    status = DaemonStatus.of(written(connected=True, last_connected_time=NOW - 5, messages_received=42,
                                     reconnect_attempts=3))
    assert status == DaemonStatus(
        connected=True, last_connected_time=NOW - 5, last_error=None, messages_received=42, reconnect_attempts=3,
        started_at=NOW - 60, stopped=False, heartbeat_at=NOW, heartbeat_interval_s=5.0, clock_skew_ms=-12.5,
        reference_error="HTTP 429", per_symbol_streams=2, unlisted=2, future_overridden=1,
        malformed={"bad_json": 4}, other_kinds={"coin_m": 30}, store_error=None, daemons=None,
        invalid_daemon_statuses=0)
    assert status.alive(NOW + 15) and not status.alive(NOW + 15.1)


def test_an_empty_or_foreign_document_is_all_unknown() -> None:
    for document in ({}, {"connection_status": [], "counters": "x", "clock": 5, "reference": None}):
        status = DaemonStatus.of(document)
        assert status == DaemonStatus()
        assert status.heartbeat_age(NOW) is None and not status.alive(NOW)


@pytest.mark.parametrize("key, value, field, expected", [
    ("connected", "false", "connected", False),     # a hand edit: a string is not "connected"
    ("connected", 1, "connected", False),
    ("last_error", "", "last_error", None),
    ("last_error", 7, "last_error", None),
    ("messages_received", -1, "messages_received", 0),
    ("messages_received", True, "messages_received", 0),
    ("reconnect_attempts", 2.5, "reconnect_attempts", 0),
    ("last_connected_time", "yesterday", "last_connected_time", None),
])
def test_a_wrong_type_in_the_connection_reads_as_unknown(key: str, value: Any, field: str, expected: Any) -> None:
    assert getattr(DaemonStatus.of(written(**{key: value})), field) == expected


def test_heartbeat_rules() -> None:
    legacy = {"updated_at": NOW}  # schema 1 had no heartbeat_at: its updated_at was written with every beat
    assert DaemonStatus.of(legacy).alive(NOW + 10)
    slow = {"heartbeat_at": NOW, "heartbeat_interval_s": 20}
    assert DaemonStatus.of(slow).alive(NOW + 60) and not DaemonStatus.of(slow).alive(NOW + 61)
    for interval in (0, -5, "5", None):  # nonsense intervals: the default, never an endless liveness
        status = DaemonStatus.of({"heartbeat_at": NOW, "heartbeat_interval_s": interval})
        assert status.heartbeat_interval_s == 5.0 and not status.alive(NOW + 16)
    stopped = DaemonStatus.of({"heartbeat_at": NOW, "stopped_at": NOW})
    assert stopped.stopped and not stopped.alive(NOW)
    assert DaemonStatus.of({"heartbeat_at": NOW}).heartbeat_age(NOW - 3) == 0.0  # a clock step back: not negative


def test_counters_of_the_wrong_shape_count_nothing() -> None:
    status = DaemonStatus.of({"counters": {"unlisted": "9", "malformed": {"bad_json": "x", "too_big": 2},
                                           "other_kinds": ["coin_m"]}})
    assert status.unlisted == 0 and status.malformed == {"bad_json": 0, "too_big": 2} and status.other_kinds == {}


def test_what_the_shared_store_adds() -> None:
    document = {"daemons": [{"id": "a", "alive": True, "connected": True}, {"id": "b", "alive": True,
                "connected": False}, "junk", {"id": "c", "alive": "yes"}],
                "invalidDaemonStatuses": 2, "storeError": "OOM command not allowed"}
    status = DaemonStatus.of(document)
    assert status.daemons == ((True, True), (True, False), (False, False))
    assert status.invalid_daemon_statuses == 2 and status.store_error == "OOM command not allowed"
