"""systemd notifications over a real datagram socket: READY once data is stored, WATCHDOG only while fresh."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from volspike_funding.feed.daemon import Daemon
from volspike_funding.feed.sdnotify import Notifier

from ..conftest import DaemonThread, scaled, scaled_s, wait_until


class Listener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return self.messages


def test_no_socket_means_no_op() -> None:
    assert Notifier({}).notify("READY=1") is False


def test_abstract_socket_address() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0volspike-test-notify")
    assert Notifier({"NOTIFY_SOCKET": "@volspike-test-notify"}).notify("READY=1")
    assert sock.recv(100) == b"READY=1"


def test_ready_then_watchdog_only_while_data_is_fresh(fake_ws, make_settings, tmp_path: Path) -> None:
    listener = Listener(tmp_path / "notify.sock")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": str(int(scaled(0.4) * 1e6))})
    settings = make_settings(BINANCE_WS_URL=fake_ws.url, FUNDING_STALE_AFTER_S=scaled_s(0.5),
                             FUNDING_NO_DATA_TIMEOUT_S="5")
    runner = DaemonThread(settings)
    runner.daemon = Daemon(settings, notifier=notifier)
    runner.thread.start()
    try:
        wait_until(lambda: sum("WATCHDOG=1" in m for m in listener.drain()) >= 3)
        first = listener.messages[0]
        assert first.startswith("READY=1") and "STATUS=700 symbols" in first
        fake_ws.stalled = True
        time.sleep(scaled(0.8))  # past the stale threshold: petting must have stopped
        listener.drain()
        listener.messages.clear()
        time.sleep(scaled(0.5))
        assert not any("WATCHDOG=1" in m for m in listener.drain())
        fake_ws.stalled = False
        wait_until(lambda: any("WATCHDOG=1" in m for m in listener.drain()))
    finally:
        runner.stop()
    assert any(m.startswith("STOPPING=1") for m in listener.drain())
