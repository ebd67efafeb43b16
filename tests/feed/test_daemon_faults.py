"""The real daemon (in a thread) against the fake exchange on loopback: every fault recovers or is reported."""

from __future__ import annotations

import json
import queue

import pytest

from volspike_funding.feed.connection import Connection
from volspike_funding.core.retry import Backoff
from volspike_funding.fake.market import DELIVERY_SYMBOL, NON_ASCII_SYMBOL
from volspike_funding.store.statefile import binance_strings

from ..conftest import scaled, scaled_s, wait_until


def frames(d) -> int:
    return d.doc()["counters"]["frames"]


def test_streams_every_symbol_into_the_state_file(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)
    doc = d.doc()
    assert doc["schemaVersion"] == 2 and doc["connection_status"]["connected"] is True
    btc = doc["funding_state"]["BTCUSDT"]
    assert set(btc) >= {"symbol", "markPrice", "indexPrice", "estimatedSettlePrice", "fundingRate",
                        "nextFundingTime", "eventTime", "updatedAt"}
    assert isinstance(btc["markPrice"], float) and binance_strings(btc)["markPrice"] == f"{btc['markPrice']:.8f}"
    assert doc["funding_state"][DELIVERY_SYMBOL]["fundingRate"] is None
    assert doc["funding_state"][DELIVERY_SYMBOL]["nextFundingTime"] is None
    # Binance's own string is kept for the Binance-compatible route: "0.00000000" with T == 0 on today's wire.
    assert binance_strings(doc["funding_state"][DELIVERY_SYMBOL])["lastFundingRate"] == "0.00000000"
    assert NON_ASCII_SYMBOL in doc["funding_state"]
    assert d.stop() == 0
    final = d.doc()
    assert final["connection_status"]["connected"] is False and final["stopped_at"] is not None
    assert len(final["funding_state"]) == 700


def test_raw_endpoint_works_too(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.raw_url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)


def test_abrupt_close_reconnects_and_keeps_data(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: frames(d) > 3)
    fake_ws.drop_all()
    wait_until(lambda: d.doc()["connection_status"]["reconnect_attempts"] >= 1)
    assert len(d.doc()["funding_state"]) == 700  # nothing lost while disconnected
    before = frames(d)
    wait_until(lambda: frames(d) > before + 3 and d.doc()["connection_status"]["connected"])
    assert fake_ws.stats["connections"] >= 2
    assert d.doc()["connection_status"]["last_error"] == "connection closed by peer"


def test_silent_stall_trips_the_no_data_watchdog(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: frames(d) > 3)
    stamp = d.doc()["funding_state"]["BTCUSDT"]["updatedAt"]
    fake_ws.stalled = True
    status = wait_until(lambda: (s := d.doc()["connection_status"])["reconnect_attempts"] >= 1 and s)
    assert "watchdog" in status["last_error"]
    # A stalled symbol ages: it is never re-stamped without new data.
    assert d.doc()["funding_state"]["BTCUSDT"]["updatedAt"] == stamp
    fake_ws.stalled = False
    wait_until(lambda: d.doc()["funding_state"]["BTCUSDT"]["updatedAt"] > stamp)


def test_legacy_url_that_sends_nothing_is_noticed(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.legacy_url))
    status = wait_until(lambda: (s := d.doc()["connection_status"])["reconnect_attempts"] >= 2 and s)
    # Not "connected is False": with no backoff the next (silent) connection may be open already when we read.
    assert "watchdog" in status["last_error"] and status["messages_received"] == 0
    assert fake_ws.stats["legacy_connections"] >= 2
    assert d.doc()["funding_state"] == {}


def test_garbage_frames_are_counted_and_never_erase_data(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)
    good = d.doc()["funding_state"]["ETHUSDT"]
    fake_ws.send_garbage("not json", b"\xff\x00binary", '{"stream":"!markPrice@arr@1s","data":42}',
                         json.dumps([{"e": "markPriceUpdate", "E": 1, "s": "ETHUSDT", "p": "0"}]),
                         json.dumps({"stream": "!markPrice@arr@1s", "data": [{"E": 1, "p": "1"}]}),
                         '{"result":null,"id":1}')
    counters = wait_until(lambda: (c := d.doc()["counters"])["malformed"].get("missing_symbol") and c)
    assert counters["malformed"]["bad_json"] == 2 and counters["malformed"]["bad_shape"] == 1
    assert counters["malformed"]["bad_price"] == 1 and counters["ignored"] >= 1
    eth = d.doc()["funding_state"]["ETHUSDT"]
    assert eth["markPrice"] > 0 and eth["eventTime"] >= good["eventTime"]
    assert d.doc()["connection_status"]["reconnect_attempts"] == 0  # garbage is no reason to reconnect


@pytest.mark.parametrize("status", [429, 503])
def test_handshake_refusal_backs_off_and_recovers(status, fake_ws, make_settings, run_daemon) -> None:
    fake_ws.refuse_handshakes(status, count=3)
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)
    assert fake_ws.stats["refused"] == 3 and d.doc()["connection_status"]["reconnect_attempts"] == 3
    assert d.daemon.failures == 0  # reset by the first good frame


def test_retry_after_on_a_refused_handshake_is_honoured(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.refuse_handshakes(429, count=1, retry_after=1)
    # Retry-After is capped
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_BACKOFF_MAX_S=scaled_s(2)))
    status = wait_until(lambda: (s := d.doc()["connection_status"])["last_error"] and s)
    assert status["last_error"] == "handshake refused: HTTP 429"
    # The backoff alone (cap 0.02 s) would reconnect at once; Retry-After holds it for a second.
    wait_until(lambda: fake_ws.stats["connections"] == 0, 0.5)
    wait_until(lambda: fake_ws.stats["connections"] == 1, 5)


def test_server_pings_are_answered(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.ping_interval_s = scaled(0.1)
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: fake_ws.stats["pongs"] >= 3)
    assert d.doc()["connection_status"]["reconnect_attempts"] == 0


def test_rotation_opens_the_new_connection_before_the_cut(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.max_connection_age_s = scaled(1.5)  # the "24 h" cut, compressed
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_ROTATE_AFTER_S=scaled_s(0.8)))
    wait_until(lambda: d.doc()["connection_status"]["rotations"] >= 3, 15)
    status = d.doc()["connection_status"]
    assert status["reconnect_attempts"] == 0 and status["connected"] is True
    assert fake_ws.stats["cuts"] == 0  # every connection was replaced before Binance would cut it


def test_forced_cut_without_rotation_reconnects(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.max_connection_age_s = scaled(0.5)
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_ROTATE_AFTER_S="0"))
    status = wait_until(lambda: (s := d.doc()["connection_status"])["reconnect_attempts"] >= 2 and s)
    assert "24h connection limit" in status["last_error"]
    assert fake_ws.stats["cuts"] >= 2


def test_heartbeat_rewrites_the_file_while_no_data_arrives(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.stalled = True
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    first = d.doc()["heartbeat_at"]
    wait_until(lambda: d.doc()["heartbeat_at"] > first + 0.3)


def test_consecutive_refusals_really_grow_the_delay(fake_ws, make_settings, run_daemon) -> None:
    fake_ws.refuse_handshakes(503, count=100)
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_BACKOFF_MAX_S="100"))
    wait_until(lambda: d.daemon.failures >= 6)
    assert Backoff(0.02, 100).ceiling(d.daemon.failures) >= 0.02 * 2 ** 5


def test_unreachable_port_is_reported(make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL="ws://127.0.0.1:9/market/stream?streams=!markPrice@arr@1s"))
    status = wait_until(lambda: (s := d.doc()["connection_status"])["reconnect_attempts"] >= 2 and s)
    assert status["connected"] is False and "refused" in status["last_error"].lower()


def test_abort_while_connecting_reports_closed() -> None:
    events: queue.Queue = queue.Queue()
    conn = Connection("ws://127.0.0.1:9/x", events, connect_timeout=1, idle_timeout=1)
    conn.abort("stop")
    conn.start()
    event = events.get(timeout=5)
    assert event.kind == "closed" and event.reason == "stop"


def test_rotation_survives_the_old_connection_dropping_first(fake_ws, make_settings, run_daemon) -> None:
    """Binance cuts the old connection while the replacement is still opening: the replacement takes over."""
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_ROTATE_AFTER_S=scaled_s(0.5),
                                 FUNDING_BACKOFF_INITIAL_S=scaled_s(2), FUNDING_BACKOFF_MAX_S=scaled_s(2)))
    wait_until(lambda: d.daemon.candidate is not None or d.doc()["connection_status"]["rotations"] >= 1)
    fake_ws.drop_all()
    wait_until(lambda: d.doc()["connection_status"]["rotations"] >= 2 and d.doc()["connection_status"]["connected"])
    stamp = d.doc()["funding_state"]["BTCUSDT"]["updatedAt"]
    wait_until(lambda: d.doc()["funding_state"]["BTCUSDT"]["updatedAt"] > stamp)


def test_delisted_symbols_age_then_are_dropped(fake_ws, make_settings, run_daemon) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_DROP_AFTER_S=scaled_s(1)))
    wait_until(lambda: "ETHUSDT" in d.doc()["funding_state"])
    fake_ws.market.delist("ETHUSDT")
    wait_until(lambda: "ETHUSDT" not in d.doc()["funding_state"])
    doc = d.doc()
    assert doc["counters"]["dropped_symbols"] == 1 and len(doc["funding_state"]) == 699


def test_malformed_input_is_logged_at_most_once_a_minute_per_kind(caplog) -> None:
    import logging

    from volspike_funding.core.logs import RateLimitedLog

    now = [0.0]
    log = RateLimitedLog(logging.getLogger("test.ratelog"), clock=lambda: now[0])
    assert log.warning("bad_json", "x") and not log.warning("bad_json", "x") and log.warning("bad_price", "y")
    now[0] = 59.9
    assert not log.warning("bad_json", "x")
    now[0] = 60.0
    assert log.warning("bad_json", "x")
    assert "(2 more since the last report)" in caplog.text


def test_a_connection_never_made_names_the_host_and_is_not_called_disconnected(make_settings, run_daemon,
                                                                                caplog) -> None:
    """Without internet the daemon logged "disconnected: Name or service not known" about a connection it never
    had, without naming the host."""
    import logging

    from volspike_funding.fake.http_fake import free_port

    with caplog.at_level(logging.WARNING, logger="funding.daemon"):
        d = run_daemon(make_settings(BINANCE_WS_URL=f"ws://127.0.0.1:{free_port()}/market/ws/!markPrice@arr@1s"))
        wait_until(lambda: d.doc()["connection_status"]["reconnect_attempts"] >= 2)
    error = d.doc()["connection_status"]["last_error"]
    assert error.startswith("cannot connect to 127.0.0.1: ") and "check DNS and that outbound TCP" in error
    lines = [r.getMessage() for r in caplog.records if "cannot connect to 127.0.0.1" in r.getMessage()]
    assert lines and all(line.startswith("cannot connect") and "; retrying in " in line for line in lines)


def test_the_cannot_connect_hint_points_at_the_network_only_when_the_network_failed() -> None:
    import socket

    import websocket

    from volspike_funding.feed.connection import cannot_connect, describe

    dns = websocket.WebSocketAddressException(socket.gaierror(-3, "Temporary failure in name resolution"))
    assert cannot_connect("wss://fstream.binance.com/market/ws", dns, describe(dns)[0]) == (
        "cannot connect to fstream.binance.com: DNS lookup failed: Temporary failure in name resolution (check DNS "
        "and that outbound TCP 443 is allowed)")
    refused = websocket.WebSocketBadStatusException("Handshake status %d %s", 451, "Unavailable")
    assert cannot_connect("wss://fstream.binance.com/market/ws", refused, "handshake refused: HTTP 451") == (
        "handshake refused: HTTP 451")  # the server answered: no network hint
