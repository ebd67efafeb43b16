"""The state file: atomic replacement, one writer, torn reads, crashes, and the reader's error reasons."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from volspike_funding.binance.wire import parse_item
from volspike_funding.store import daemon_status, statefile
from volspike_funding.core.errors import StateLockedError, StateUnreadable

from ..conftest import ROOT, fill, read_doc, wait_until


def doc(n: int) -> dict:
    symbols = {f"S{i}USDT": {"symbol": f"S{i}USDT", "markPrice": 1.0 + n, "eventTime": 1, "updatedAt": 1.0}
               for i in range(700)}
    return statefile.build_document(symbols, daemon_status.new_connection_status("ws://x"), {}, now=float(n),
                                    heartbeat_s=5, started_at=0.0)


def test_write_is_atomic_with_mode_0644_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "sub dir" / ".funding_state.json"
    writer = statefile.StateWriter(path)
    writer.write(doc(1))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert read_doc(path)["schemaVersion"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == [".funding_state.json", ".funding_state.json.lock"]
    writer.close()


def test_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = statefile.StateWriter(path)
    with pytest.raises(StateLockedError, match=f"pid {os.getpid()}"):
        statefile.StateWriter(path)
    first.close()
    statefile.StateWriter(path).close()  # the lock goes with its holder


def test_orphaned_temp_files_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    orphan = tmp_path / ".tmp-state.json.abc123"
    orphan.write_text("{half")
    statefile.StateWriter(path).close()
    assert not orphan.exists()


def test_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    writer = statefile.StateWriter(path)
    writer.write(doc(0))
    errors, reads, done = [], [0], threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                statefile.read_state(path)
                reads[0] += 1
            except StateUnreadable as exc:
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(3000):
        writer.write(doc(n))
    done.set()
    thread.join()
    writer.close()
    assert errors == [] and reads[0] > 100


def test_reader_reasons(tmp_path: Path) -> None:
    with pytest.raises(StateUnreadable) as info:
        statefile.read_state(tmp_path / "nope.json")
    assert info.value.reason == "missing"
    bad = tmp_path / "bad.json"
    for content in (b"{half", b"[]", b'{"funding_state": 3}', b'{"schemaVersion": 99, "funding_state": {}}'):
        bad.write_bytes(content)
        with pytest.raises(StateUnreadable) as info:
            statefile.read_state(bad)
        assert info.value.reason == "invalid"
    os.chmod(bad, 0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(StateUnreadable) as info:
            statefile.read_state(bad)
        assert info.value.reason == "unreadable"


def full_record(symbol: str, **changes: Any) -> dict[str, Any]:
    now = time.time()
    return {"symbol": symbol, "markPrice": 1.5, "indexPrice": 1.4, "estimatedSettlePrice": None, "fundingRate": None,
            "nextFundingTime": None, "eventTime": int(now * 1000), "updatedAt": now, "binance": "1.5|1.4||",
            **changes}


def test_binance_strings_carry_ap_and_st_and_read_older_four_field_records() -> None:
    update = parse_item({"e": "markPriceUpdate", "E": 1, "s": "X", "p": "1.5", "ap": "1.49", "i": "1.4",
                         "r": "0.0001", "T": 2, "st": 1})
    record = statefile.symbol_record(update, 1.0)
    assert record["binance"] == "1.5|1.4||0.0001|1.49|1"
    assert statefile.binance_strings(record) == {
        "markPrice": "1.5", "indexPrice": "1.4", "estimatedSettlePrice": "", "lastFundingRate": "0.0001",
        "markPriceAverage": "1.49", "symbolType": "1"}
    legacy = parse_item({"E": 1, "s": "X", "p": "2"})
    assert statefile.symbol_record(legacy, 1.0)["binance"] == "2|||||"
    assert statefile.binance_strings(full_record("X")) == {
        "markPrice": "1.5", "indexPrice": "1.4", "estimatedSettlePrice": "", "lastFundingRate": "",
        "markPriceAverage": "", "symbolType": ""}


def test_lookup_is_exact_then_ascii_case_insensitive() -> None:
    snap = statefile.parse_document(json.dumps({"funding_state": {
        "BTCUSDT": full_record("BTCUSDT"), "币安人生USDT": full_record("币安人生USDT")}}).encode())
    assert snap.lookup("btcusdt")["symbol"] == "BTCUSDT"
    assert snap.lookup("币安人生USDT")["symbol"] == "币安人生USDT"
    assert snap.lookup("币安人生usdt") is None and snap.lookup("ETHUSDT") is None


def daemon_cmd(fake_url: str, state: Path) -> list[str]:
    return [sys.executable, str(ROOT / "binance_funding_ws_daemon.py"), "--ws-url", fake_url,
            "--state-file", str(state), "--heartbeat-s", "0.2", "--no-data-timeout-s", "1"]


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNDING_", "BINANCE_", "NOTIFY_"))}
    env["VOLSPIKE_ENV_FILE"] = os.devnull
    return env


def test_kill_9_mid_stream_leaves_a_valid_file_and_a_clean_restart(fake_ws, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(daemon_cmd(fake_ws.url, state), env=clean_env(tmp_path), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: state.exists() and read_doc(state)["counters"]["frames"] > 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        after = read_doc(state)  # valid JSON, the last complete write
        assert len(after["funding_state"]) == 700
        # The lock died with the process: a new daemon starts, keeps the symbols and cleans any temp file.
        proc = subprocess.Popen(daemon_cmd(fake_ws.url, state), env=clean_env(tmp_path), stderr=subprocess.PIPE)
        wait_until(lambda: read_doc(state)["daemon_pid"] == proc.pid)
        assert len(read_doc(state)["funding_state"]) == 700
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
    assert not list(tmp_path.glob(".tmp-*"))


def test_sigterm_writes_a_final_disconnected_state_and_exits_0(fake_ws, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(daemon_cmd(fake_ws.url, state), env=clean_env(tmp_path), stderr=subprocess.PIPE)
    wait_until(lambda: state.exists() and read_doc(state)["connection_status"]["connected"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    final = read_doc(state)
    assert final["connection_status"]["connected"] is False and final["stopped_at"] is not None


def test_a_second_daemon_on_the_same_file_refuses_to_start(fake_ws, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = subprocess.Popen(daemon_cmd(fake_ws.url, state), env=clean_env(tmp_path), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: state.exists())
        second = subprocess.run(daemon_cmd(fake_ws.url, state), env=clean_env(tmp_path), capture_output=True,
                                text=True, timeout=20)
        assert second.returncode == 1
        assert second.stderr.strip().count("\n") == 0 and "already writes" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.wait(10)


def test_full_disk_is_survived_and_reported(fake_ws, make_settings, run_daemon, tiny_disk: Path, caplog) -> None:
    d = run_daemon(make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_STATE_FILE=str(tiny_disk / "state.json")))
    wait_until(lambda: len(read_doc(d.state_file)["funding_state"]) == 700)
    filler = fill(tiny_disk)
    wait_until(lambda: "No space left on device" in caplog.text)
    assert d.thread.is_alive() and len(read_doc(d.state_file)["funding_state"]) == 700  # old file intact
    filler.unlink()
    before = read_doc(d.state_file)["heartbeat_at"]
    wait_until(lambda: read_doc(d.state_file)["heartbeat_at"] > before)  # writing again once space is back
    assert read_doc(d.state_file)["counters"]["write_errors"] >= 1
    d.stop()
