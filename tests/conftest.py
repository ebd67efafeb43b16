"""Shared fixtures: a fake Binance on loopback and the real daemon against it, with millisecond timings."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volspike_funding.feed.daemon import Daemon  # noqa: E402
from volspike_funding.fake.ws_server import FakeBinanceWS  # noqa: E402
from volspike_funding.core.settings import Settings, load_settings  # noqa: E402



def _time_scale() -> float:
    raw = os.environ.get("VOLSPIKE_TEST_TIME_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (1.0 <= value <= 100.0):  # nan fails too; below 1 would only make the suite flakier
        raise pytest.UsageError(f"VOLSPIKE_TEST_TIME_SCALE must be a number from 1 to 100, not {raw!r}")
    return value


#: One knob for slow or busy machines (CI can raise it): every timing-sensitive setting, cadence, timeout and
#: wait of the tests is multiplied by it, so their ratios (cadence < heartbeat < stale threshold ...) hold.
TIME_SCALE = _time_scale()


def scaled(seconds: float) -> float:
    """A test's duration on this machine: ``seconds`` times VOLSPIKE_TEST_TIME_SCALE."""
    return seconds * TIME_SCALE


def scaled_s(seconds: float) -> str:
    """The same, as a settings value (``FUNDING_..._S``)."""
    return f"{scaled(seconds):g}"


FAST = {
    "FUNDING_NO_DATA_TIMEOUT_S": scaled_s(0.6),
    "FUNDING_CONNECT_TIMEOUT_S": scaled_s(2),
    "FUNDING_BACKOFF_INITIAL_S": scaled_s(0.02),
    "FUNDING_BACKOFF_MAX_S": scaled_s(0.2),
    "FUNDING_HEARTBEAT_S": scaled_s(0.2),
    "FUNDING_STALE_AFTER_S": scaled_s(2),
    "FUNDING_REFERENCE_ENABLED": "false",
}


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy; ``timeout`` is scaled by VOLSPIKE_TEST_TIME_SCALE."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def within_one_hour(budget_s: float, grace_s: float = 10.0) -> None:
    """Wait, if need be, until the next ``budget_s`` (scaled) seconds fall inside one wall-clock hour, past its
    first ``grace_s`` (scaled: the last hour's final kline messages come ~2 s after it closed). Tests of 1 h candles
    run on the real clock, which the daemon and the API read; an hour closing mid-test changes what is true."""
    into = time.time() % 3600
    if into < scaled(grace_s):
        time.sleep(scaled(grace_s) - into)
    elif 3600 - into < scaled(budget_s):
        time.sleep(3600 - into + scaled(grace_s))


def read_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


@pytest.fixture
def fake_ws() -> Iterator[FakeBinanceWS]:
    with FakeBinanceWS(cadence_s=scaled(0.05)) as fake:
        yield fake


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {"VOLSPIKE_ENV_FILE": str(tmp_path / "absent.env"),
                "FUNDING_STATE_FILE": str(tmp_path / "state" / ".funding_state.json"), **FAST}
        base.update(env)
        return load_settings(base)
    return make


class DaemonThread:
    def __init__(self, settings: Settings, **daemon_options: Any) -> None:
        """``daemon_options``: the :class:`Daemon`'s own (``clock``: a host whose clock is off)."""
        self.settings = settings
        self.daemon = Daemon(settings, **daemon_options)
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.daemon.run()), daemon=True)

    @property
    def state_file(self) -> Path:
        return self.settings.state_file

    def doc(self) -> dict[str, Any]:
        return read_doc(self.state_file)

    def stop(self) -> int:
        self.daemon.request_stop()
        self.thread.join(scaled(10))
        assert not self.thread.is_alive()
        return self.result[0]


@pytest.fixture
def run_daemon() -> Iterator[Callable[..., DaemonThread]]:
    started: list[DaemonThread] = []

    def start(settings: Settings, **daemon_options: Any) -> DaemonThread:
        d = DaemonThread(settings, **daemon_options)
        d.thread.start()
        started.append(d)
        wait_until(lambda: settings.state_file.exists(), 5)
        return d

    yield start
    for d in started:
        if d.thread.is_alive():
            d.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Fake Binance WebSocket + the real daemon + the real API, shared by one test module's consumer tests."""
    from .consumers.consumer_stack import start_stack

    s = start_stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 KiB tmpfs (root only): room for one 700-symbol state file and its replacement, then full."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def fill(disk: Path) -> Path:
    """Fill what is left of ``disk``; returns the filler (unlink it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as stream:
        try:
            stream.write(b"\0" * 700_000)
        except OSError:
            pass
    return filler
