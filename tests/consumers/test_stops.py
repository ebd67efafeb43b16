"""SIGTERM stops both consumers within 2 s at any point (issue 19): in the rate pacer's sleep, mid-scan, with a
hung backend. Real processes against the loopback fakes; the stop time is measured from the signal to the exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ..conftest import ROOT, wait_until
from .consumer_stack import World, open_world

STOP_BOUND_S = 2.0


@pytest.fixture
def world(stack, tmp_path: Path) -> Iterator[World]:
    with open_world(stack, tmp_path) as w:
        w.prod.liquid_universe = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        yield w


class Consumer:
    """A consumer script as a process, its stderr collected line by line."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / script)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def sigterm(self) -> tuple[float, int]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(5)
        return time.monotonic() - started, code


def env_of(world: World, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "BINANCE_REST_URL": world.rest.url,
            "WS_FUNDING_API_URL": world.stack.api.url + "/funding", "FUNDING_SOURCE_MODE": "ws",
            "VOLSPIKE_API_URL": world.prod.url, "VOLSPIKE_API_KEY": "prod-secret-key",
            "OI_STATE_FILE": str(tmp_path / "oi.json"), "OI_UNIVERSE_PUBLISH_S": "0",
            "VOLUME_ALERT_STATE_FILE": str(tmp_path / "a.json"), "FUNDING_STALE_AFTER_S": "5", **extra}


def stop_when(consumer: Consumer, ready: Callable[[], bool]) -> float:
    try:
        wait_until(lambda: ready() or consumer.proc.poll() is not None, 30)
        assert consumer.proc.poll() is None, "".join(consumer.lines)[-2000:]
    except BaseException:
        consumer.proc.kill()
        raise
    took, code = consumer.sigterm()
    assert code == 0 and took < STOP_BOUND_S, (took, code, "".join(consumer.lines)[-2000:])
    assert consumer.logged("stopped") and "Traceback" not in "".join(consumer.lines)
    return took


def heavy_minute(world: World) -> None:
    """Past 95 % of the weight limit: the client's pacer waits for the next UTC minute (up to 60 s)."""
    wait_until(lambda: time.time() % 60 < 40, 25)  # room in this minute for the process to start and pace
    world.rest.weight_minute, world.rest.used_weight = int(time.time() // 60), 2350


def test_oi_poller_stops_within_2_s_in_the_rate_pacers_sleep(world: World, tmp_path: Path) -> None:
    heavy_minute(world)
    poller = Consumer("oi_realtime_poller.py", env_of(world, tmp_path))
    stop_when(poller, lambda: poller.logged("waiting") and poller.logged("for the next minute"))


def test_oi_poller_stops_within_2_s_while_prod_hangs(world: World, tmp_path: Path) -> None:
    world.prod.fail("/api/market/open-interest/ingest", 200, count=100, delay_s=30.0)
    poller = Consumer("oi_realtime_poller.py", env_of(world, tmp_path))
    stop_when(poller, lambda: world.prod.counts["/api/market/open-interest/ingest"] >= 1)
    assert world.prod.counts["/api/market/open-interest/ingest"] == 1  # the hung POST was not sent again


def test_volume_script_stops_within_2_s_mid_scan(world: World, tmp_path: Path) -> None:
    world.rest.latency_s["/fapi/v1/klines"] = 0.5  # 30 symbols on 8 threads: a scan of 2 s or more
    alerts = Consumer("hourly_volume_alert_dual_env.py", env_of(world, tmp_path))
    stop_when(alerts, lambda: world.rest.counts["/fapi/v1/klines"] >= 1)
    assert not alerts.logged(" done in ")  # the scan never finished: nothing of it was judged or sent


def test_volume_script_stops_within_2_s_in_the_rate_pacers_sleep(world: World, tmp_path: Path) -> None:
    heavy_minute(world)
    alerts = Consumer("hourly_volume_alert_dual_env.py", env_of(world, tmp_path))
    stop_when(alerts, lambda: alerts.logged("for the next minute"))


def test_a_crash_of_the_work_thread_still_reaches_the_exit_code() -> None:
    from volspike_funding.consumers.shutdown import run_until_stopped

    def work() -> None:
        raise RuntimeError("the loop crashed")

    with pytest.raises(RuntimeError, match="the loop crashed"):  # cli.run turns it into a non-zero exit
        run_until_stopped(work, threading.Event(), [], drain_s=1.0)
