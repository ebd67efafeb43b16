"""The daemon and the state file under attack: event times from the future, an unbounded Retry-After, a removed
lock file, records edited by an outsider, odd symbols, secrets at DEBUG and a final write that fails."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests

from volspike_funding.api.server import ServerThread
from volspike_funding.fake.ws_server import FakeBinanceWS
from volspike_funding.core.settings import Settings

from ..conftest import ROOT, DaemonThread, fill, read_doc, scaled, scaled_s, wait_until
from ..api.test_api import put_state, record

HOUR_MS = 3_600_000


def frame(items: list[dict[str, Any]]) -> str:
    return json.dumps({"stream": "!markPrice@arr@1s", "data": items})


def item(symbol: str, event_ms: int, price: str = "1.23000000") -> dict[str, Any]:
    return {"e": "markPriceUpdate", "E": event_ms, "s": symbol, "p": price, "ap": price, "P": price, "i": price,
            "r": "0.00010000", "T": event_ms + HOUR_MS, "st": 1}


# -- 2. event times from the future ---------------------------------------------------------------------------------

def test_a_frame_an_hour_ahead_freezes_nothing(fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings],
                                               run_daemon: Callable[[Settings], DaemonThread]) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)
    ahead = int(time.time() * 1000) + HOUR_MS
    fake_ws.send_garbage(frame([item(s, ahead) for s in fake_ws.market.contracts]))
    wait_until(lambda: d.doc()["counters"]["malformed"].get("implausible_time", 0) >= 700)
    updates = d.doc()["counters"]["updates"]
    wait_until(lambda: d.doc()["counters"]["updates"] >= updates + 1400)  # true updates keep being stored
    state = d.doc()["funding_state"]
    assert all(rec["eventTime"] < ahead - HOUR_MS / 2 for rec in state.values())
    assert state["BTCUSDT"]["markPrice"] != 1.23


def test_a_century_ahead_is_rejected_and_a_near_future_time_is_overridden(
        fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings],
        run_daemon: Callable[[Settings], DaemonThread]) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: "BTCUSDT" in d.doc()["funding_state"])
    now = int(time.time() * 1000)
    fake_ws.send_garbage(frame([item("BTCUSDT", now + 100 * 365 * 24 * HOUR_MS)]))
    wait_until(lambda: d.doc()["counters"]["malformed"].get("implausible_time"))
    assert d.doc()["funding_state"]["BTCUSDT"]["markPrice"] != 1.23
    # Within the plausibility bound (300 s) but ahead of Binance's clock: stored once, then true updates win.
    fake_ws.send_garbage(frame([item("ETHUSDT", now + 200_000)]))
    wait_until(lambda: d.doc()["counters"]["future_overridden"] >= 1)
    wait_until(lambda: d.doc()["funding_state"]["ETHUSDT"]["markPrice"] != 1.23)


def test_restored_state_goes_through_the_same_checks(fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings],
                                                     run_daemon: Callable[[Settings], DaemonThread]) -> None:
    settings = make_settings(BINANCE_WS_URL=fake_ws.url)
    future = record("BTCUSDT", 0)
    future["eventTime"] += 100 * 365 * 24 * HOUR_MS
    put_state(settings.state_file, {"BTCUSDT": future, "ETHUSDT": record("ETHUSDT", 0),
                                    "BADUSDT": {**record("BADUSDT", 0), "markPrice": "abc"},
                                    "../../etc/passwd": record("../../etc/passwd", 0)})
    d = run_daemon(settings)
    wait_until(lambda: d.doc()["counters"].get("frames", 0) >= 3)  # the daemon's own file, not ours
    state = d.doc()["funding_state"]
    assert "BADUSDT" not in state and "../../etc/passwd" not in state
    assert state["BTCUSDT"]["eventTime"] < int(time.time() * 1000) + 60_000  # the future time was not restored


def test_clock_skew_is_measured_and_a_wrong_clock_is_a_health_reason(tmp_path: Path,
                                                                     make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0)})
    doc = read_doc(settings.state_file)
    doc["clock"] = {"skewMs": -42_000, "samples": 31}
    settings.state_file.write_text(json.dumps(doc))
    with ServerThread(settings, poll_s=0.05) as api:
        health = requests.get(api.url + "/funding/health", timeout=5).json()
        assert health["clockSkewSeconds"] == -42.0 and health["status"] == "unhealthy"
        assert any("clock is +42.0 s off" in r for r in health["reasons"])
        assert "funding_clock_skew_seconds -42.0" in requests.get(api.url + "/metrics", timeout=5).text


# -- 4. Retry-After ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("asked", ["3600", "inf", "-5"])
def test_retry_after_is_capped_and_bad_values_ignored(asked: str, fake_ws: FakeBinanceWS, caplog: Any,
                                                      make_settings: Callable[..., Settings],
                                                      run_daemon: Callable[[Settings], DaemonThread]) -> None:
    caplog.set_level(logging.WARNING)
    fake_ws.refuse_handshakes(429, count=1, retry_after=float(asked))
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: fake_ws.stats["connections"] == 1, 5)  # reconnected within the backoff cap (0.2 s)
    assert d.doc()["connection_status"]["reconnect_attempts"] == 1
    if asked == "3600":
        assert f"server asked to retry after 3600 s; waiting {scaled(0.2):g} s" in caplog.text
    else:
        assert f"unusable Retry-After '{float(asked):g}' ignored" in caplog.text


# -- 5. the lock ------------------------------------------------------------------------------------------------------

def daemon_proc(url: str, state: Path, tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_REFERENCE_ENABLED": "false"}
    return subprocess.Popen([sys.executable, str(ROOT / "binance_funding_ws_daemon.py"), "--ws-url", url,
                             "--state-file", str(state), "--heartbeat-s", scaled_s(0.2)], env=env,
                            stderr=subprocess.PIPE, text=True)


def take_lock_path(lock: Path) -> int:
    """What a second daemon does after an outsider removed the lock file: lock a new file at the path. Retried when
    the running daemon re-created its lock first (it checks before every write)."""
    for _ in range(200):
        lock.unlink(missing_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
    raise AssertionError("could not take the lock path")


def test_removing_the_lock_file_never_allows_two_writers(fake_ws: FakeBinanceWS, tmp_path: Path) -> None:
    state = tmp_path / ".funding_state.json"
    lock = tmp_path / ".funding_state.json.lock"
    first = daemon_proc(fake_ws.url, state, tmp_path)
    second = None
    try:
        wait_until(lambda: state.exists() and read_doc(state)["daemon_pid"] == first.pid)
        impostor = take_lock_path(lock)  # a new inode at the path, locked by someone else
        assert first.wait(scaled(10)) == 1  # the loser stops: at most one write after the takeover
        stderr = first.stderr.read() if first.stderr else ""
        assert "lost the lock" in stderr and "Traceback" not in stderr
        os.close(impostor)
        second = daemon_proc(fake_ws.url, state, tmp_path)
        wait_until(lambda: read_doc(state)["daemon_pid"] == second.pid)
        pids = set()
        for _ in range(20):
            pids.add(read_doc(state)["daemon_pid"])
            time.sleep(scaled(0.05))
        assert pids == {second.pid} and second.poll() is None
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)


def test_a_removed_lock_file_is_taken_back_when_nobody_else_did(fake_ws: FakeBinanceWS, tmp_path: Path) -> None:
    state = tmp_path / ".funding_state.json"
    lock = tmp_path / ".funding_state.json.lock"
    proc = daemon_proc(fake_ws.url, state, tmp_path)
    try:
        wait_until(lambda: state.exists())
        lock.unlink()
        wait_until(lambda: lock.exists() and lock.read_text().strip() == str(proc.pid))
        assert proc.poll() is None
        refused = daemon_proc(fake_ws.url, state, tmp_path)
        assert refused.wait(10) == 1  # the re-created lock is really held
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# -- 6. records edited by an outsider ------------------------------------------------------------------------------

def test_malformed_records_are_skipped_counted_and_never_a_500(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    no_symbol = record("NOSYMUSDT", 0)
    del no_symbol["symbol"]
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0), "NOSYMUSDT": no_symbol,
                                    "FUTUREUSDT": record("FUTUREUSDT", -3600),  # updatedAt an hour ahead
                                    "ABCUSDT": {**record("ABCUSDT", 0), "markPrice": "abc"}})
    with ServerThread(settings, poll_s=0.05) as api:
        listing = requests.get(api.url + "/fapi/v1/premiumIndex", timeout=5)
        assert listing.status_code == 200 and [i["symbol"] for i in listing.json()] == ["BTCUSDT"]
        batch = requests.get(api.url + "/funding/batch", timeout=5).json()
        assert batch["total"] == 1
        for name in ("NOSYMUSDT", "FUTUREUSDT", "ABCUSDT"):
            assert requests.get(f"{api.url}/funding/{name}", timeout=5).status_code == 503  # no listing known
        health = requests.get(api.url + "/funding/health", timeout=5).json()
        assert health["invalidRecords"] == 3 and any("3 malformed records" in w for w in health["warnings"])
        assert "funding_invalid_records 3.0" in requests.get(api.url + "/metrics", timeout=5).text


# -- 7. odd symbols and churn -----------------------------------------------------------------------------------------

def test_odd_symbols_from_the_feed_are_never_stored(fake_ws: FakeBinanceWS, make_settings: Callable[..., Settings],
                                                    run_daemon: Callable[[Settings], DaemonThread]) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url))
    wait_until(lambda: len(d.doc()["funding_state"]) == 700)
    now = int(time.time() * 1000)
    fake_ws.send_garbage(frame([item("X" * 100_000, now), item("../../etc/passwd", now), item("A|B\0C\n", now)]))
    wait_until(lambda: d.doc()["counters"]["malformed"].get("bad_symbol", 0) >= 3)
    assert len(d.doc()["funding_state"]) == 700


def test_health_turns_unhealthy_when_too_many_symbols_are_stale(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    put_state(settings.state_file, {"BTCUSDT": record("BTCUSDT", 0),
                                    **{f"OLD{i}USDT": record(f"OLD{i}USDT", 600) for i in range(3)}})
    with ServerThread(settings, poll_s=0.05) as api:
        health = requests.get(api.url + "/funding/health", timeout=5).json()
        assert health["status"] == "unhealthy" and health["staleShare"] == 0.75
        assert any("3 of 4 symbols are stale (75%, max 25%)" in r for r in health["reasons"])


# -- 3 and 8: logs that tell the truth and keep secrets -----------------------------------------------------------

def test_daemon_and_api_debug_logs_keep_secrets(fake_ws: FakeBinanceWS, tmp_path: Path) -> None:
    secrets = {"TELEGRAM_TOKEN": "123456:tg-secret-token", "VOLSPIKE_API_KEY": "prod-secret-key-1",
               "VOLSPIKE_API_KEY_DEV": "dev-secret-key-1"}
    env = {**os.environ, **secrets, "VOLSPIKE_ENV_FILE": os.devnull, "FUNDING_LOG_LEVEL": "DEBUG",
           "FUNDING_STATE_FILE": str(tmp_path / "s.json"), "BINANCE_WS_URL": fake_ws.url,
           "BINANCE_REST_URL": "http://127.0.0.1:9", "FUNDING_API_PORT": "0"}
    logs = []
    for script in ("binance_funding_ws_daemon.py", "funding_api_server.py"):
        proc = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(scaled(2.5))  # a few heartbeats of DEBUG logging; neither process says more
        proc.send_signal(signal.SIGTERM)
        logs.append(proc.communicate(timeout=15)[1])
    assert "DEBUG" in logs[0] and all(s not in log for log in logs for s in secrets.values())


def test_a_failed_final_write_is_not_reported_as_written(fake_ws: FakeBinanceWS, tiny_disk: Path,
                                                         make_settings: Callable[..., Settings],
                                                         run_daemon: Callable[[Settings], DaemonThread],
                                                         caplog: Any) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_STATE_FILE=str(tiny_disk / "state.json")))
    wait_until(lambda: len(read_doc(d.state_file)["funding_state"]) == 700)
    fill(tiny_disk)
    assert d.stop() == 0
    assert "final state could NOT be written" in caplog.text and "final state written" not in caplog.text
