"""The consumers' status files (store/consumer_status.py) on real files: written atomically from plain data, read
back bounded and sanitised, a bad or unreadable file skipped, a failing write never raised."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from volspike_funding.store.consumer_status import MAX_FILES, SUFFIX, read_all, status_path, write

REST = {"requests": 51200, "rateLimited": 2, "banned": 0}
DELIVERIES = {"accepted": 1724, "rejected": 1, "uncertain": 3, "dropped": 0}


def test_written_then_read_back(tmp_path: Path) -> None:
    path = status_path(tmp_path / "state" / ".oi_alert_state.json", "oi_poller")
    assert path == tmp_path / "state" / ("oi_poller" + SUFFIX)
    before = time.time()
    write(path, "oi_poller", REST, DELIVERIES)  # creates the directory
    doc = json.loads(path.read_bytes())
    assert doc["pid"] == os.getpid() and before <= doc["updatedAt"] <= time.time()
    assert read_all(path.parent) == [{"consumer": "oi_poller", "updatedAt": doc["updatedAt"], "rest": REST,
                                      "deliveries": DELIVERIES}]
    write(path, "oi_poller", {**REST, "requests": 51201}, DELIVERIES)  # replaced in place, no temporary left
    assert read_all(path.parent)[0]["rest"]["requests"] == 51201 and os.listdir(path.parent) == [path.name]


def test_a_failing_write_is_swallowed(tmp_path: Path) -> None:
    """Monitoring must never stop a consumer: here the directory cannot be created (a file is in the way)."""
    (tmp_path / "blocker").write_text("x")
    write(tmp_path / "blocker" / ("x" + SUFFIX), "x", REST, DELIVERIES)
    assert (tmp_path / "blocker").read_text() == "x"


def test_a_missing_directory_reads_as_no_consumers(tmp_path: Path) -> None:
    assert read_all(tmp_path / "absent") == [] and read_all(tmp_path) == []


def put(directory: Path, name: str, raw: bytes | str) -> None:
    (directory / (name + SUFFIX)).write_bytes(raw.encode() if isinstance(raw, str) else raw)


def test_bad_files_are_skipped_and_bad_fields_read_as_zero_or_unknown(tmp_path: Path) -> None:
    put(tmp_path, "a_not_json", "{")
    put(tmp_path, "b_not_an_object", "[1, 2]")
    put(tmp_path, "c_no_name", json.dumps({"updatedAt": 1.0}))
    put(tmp_path, "d_name_not_text", json.dumps({"consumer": 42}))
    (tmp_path / ("e_a_directory" + SUFFIX)).mkdir()  # unreadable as a file
    put(tmp_path, "f_binary", b"\xff\xfe\x00")
    put(tmp_path, "g_odd", json.dumps({"consumer": "volume_alerts" + "x" * 100, "updatedAt": "yesterday",
                                       "rest": {"requests": -5, "rateLimited": True, "banned": 1.5},
                                       "deliveries": None}))
    put(tmp_path, "h_minimal", json.dumps({"consumer": "oi_poller", "updatedAt": 1795478400}))
    (tmp_path / "other.json").write_text("{}")  # not a status file
    odd, minimal = read_all(tmp_path)
    assert odd == {"consumer": ("volume_alerts" + "x" * 100)[:40], "updatedAt": None,  # unknown, never 0
                   "rest": {"requests": 0, "rateLimited": 0, "banned": 0},
                   "deliveries": {"accepted": 0, "rejected": 0, "uncertain": 0, "dropped": 0}}
    assert minimal["updatedAt"] == 1795478400.0 and isinstance(minimal["updatedAt"], float)
    assert minimal["rest"] == {"requests": 0, "rateLimited": 0, "banned": 0}


def test_at_most_max_files_are_read(tmp_path: Path) -> None:
    for i in range(MAX_FILES + 5):
        write(tmp_path / f"c{i:02d}{SUFFIX}", f"c{i:02d}", REST, DELIVERIES)
    found = read_all(tmp_path)
    assert [s["consumer"] for s in found] == [f"c{i:02d}" for i in range(MAX_FILES)]

