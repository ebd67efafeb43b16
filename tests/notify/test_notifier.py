"""funding_health_notifier.py as a real process against a loopback health endpoint (a fake, and the real API) and
the fake Telegram: one message per transition, never a flood, at most once, the token never in its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from volspike_funding.api.server import ServerThread
from volspike_funding.core.settings import Settings
from volspike_funding.fake.backend import FakeTelegram
from volspike_funding.fake.http_fake import HttpFake, Reply, Request, free_port

from ..conftest import ROOT, wait_until

TOKEN = "987654:secret-bot-token"
SCRIPT = ROOT / "funding_health_notifier.py"


class FakeHealth(HttpFake):
    """``/funding/health`` answering whatever the test sets (the real API's shape: status, reasons)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.reasons: list[str] = []
        self.routes = {("GET", "/funding/health"): self._health}

    def _health(self, request: Request) -> Reply:
        reasons = list(self.reasons)
        return Reply(503 if reasons else 200, {"status": "unhealthy" if reasons else "healthy", "reasons": reasons})

    def polls(self) -> int:
        return self.counts["/funding/health"]


@pytest.fixture
def health() -> Iterator[FakeHealth]:
    with FakeHealth() as fake:
        yield fake


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token=TOKEN) as fake:
        yield fake


class Notifier:
    def __init__(self, tmp_path: Path, health_url: str, telegram_url: str, **env: str) -> None:
        self.log = tmp_path / "notifier.log"
        self.env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "TELEGRAM_TOKEN": TOKEN,
                    "TELEGRAM_API_URL": telegram_url, "HEALTH_NOTIFY_CHAT_ID": "-10042",
                    "HEALTH_NOTIFY_URL": health_url, "HEALTH_NOTIFY_AFTER_S": "0.4",
                    "HEALTH_NOTIFY_INTERVAL_S": "0.05", "TELEGRAM_TIMEOUT_S": "0.5",
                    "HEALTH_NOTIFY_STATE_FILE": str(tmp_path / "state" / "notify.json"), **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Notifier":
        with self.log.open("a") as sink:
            self.proc = subprocess.Popen([sys.executable, str(SCRIPT)], env=self.env, stderr=sink,
                                         stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def notifier(tmp_path: Path) -> Iterator[Callable[..., Notifier]]:
    started: list[Notifier] = []

    def make(health_url: str, telegram_url: str, **env: str) -> Notifier:
        n = Notifier(tmp_path, health_url, telegram_url, **env).start()
        started.append(n)
        return n

    yield make
    for n in started:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait(10)


def polls_pass(health: FakeHealth, n: int = 20) -> None:
    """Let ``n`` more polls happen (the notifier's own pace, no fixed sleep)."""
    target = health.polls() + n
    wait_until(lambda: health.polls() >= target, 20)


def test_one_message_when_unhealthy_for_the_delay_one_when_healthy_again(
        tmp_path: Path, health: FakeHealth, telegram: FakeTelegram, notifier: Callable[..., Notifier]) -> None:
    # a delay far above a few polls' time, even on a loaded machine, so the blip below is surely shorter
    n = notifier(health.url + "/funding/health", telegram.url, HEALTH_NOTIFY_AFTER_S="3")
    polls_pass(health, 5)
    assert telegram.messages == []  # healthy: nothing to say
    health.reasons = ["daemon stopped"]
    polls_pass(health, 3)
    health.reasons = []  # a blip shorter than the delay: no message
    polls_pass(health, 3)
    assert telegram.messages == []
    health.reasons = ["daemon stopped", "newest data is 75.0 s old (max 60 s)"]
    wait_until(lambda: telegram.messages, 20)
    health.reasons = ["websocket disconnected: no route"]  # other reasons, still unhealthy: no second message
    polls_pass(health, 30)
    assert len(telegram.messages) == 1
    first = telegram.messages[0]
    assert first["chat_id"] == "-10042" and "UNHEALTHY" in first["text"]
    assert "daemon stopped" in first["text"] and "75.0 s old" in first["text"]
    health.reasons = []
    wait_until(lambda: len(telegram.messages) == 2, 20)
    polls_pass(health, 30)
    assert len(telegram.messages) == 2 and "healthy again" in telegram.messages[1]["text"]
    assert n.stop() == 0
    assert TOKEN not in n.text() and "secret-bot-token" not in n.text()
    assert "posted to Telegram" in n.text()


def test_the_api_not_answering_is_worth_a_message(tmp_path: Path, telegram: FakeTelegram,
                                                  notifier: Callable[..., Notifier]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/funding/health"  # nothing listens there
    n = notifier(dead, telegram.url)
    wait_until(lambda: telegram.messages, 20)
    assert "the API does not answer" in telegram.messages[0]["text"] and dead in telegram.messages[0]["text"]
    assert n.stop() == 0 and len(telegram.messages) == 1


def test_the_real_api_without_a_daemon(tmp_path: Path, telegram: FakeTelegram, notifier: Callable[..., Notifier],
                                       make_settings: Callable[..., Settings]) -> None:
    with ServerThread(make_settings(), poll_s=0.05) as api:  # no state file: unhealthy, and it says why
        n = notifier(api.url + "/funding/health", telegram.url)
        wait_until(lambda: telegram.messages, 20)
    assert "state unavailable" in telegram.messages[0]["text"]
    assert n.stop() == 0


def test_a_send_that_may_have_arrived_is_never_repeated_and_a_restart_repeats_nothing(
        tmp_path: Path, health: FakeHealth, telegram: FakeTelegram, notifier: Callable[..., Notifier]) -> None:
    path = f"/bot{TOKEN}/sendMessage"
    telegram.fail(path, 200, delay_s=1.5)  # answers after the 0.5 s timeout: it may have arrived
    health.reasons = ["daemon stopped"]
    n = notifier(health.url + "/funding/health", telegram.url)
    wait_until(lambda: telegram.counts[path] == 1, 20)
    polls_pass(health, 40)
    assert telegram.counts[path] == 1 and "may have arrived" in n.text() and "posted to Telegram" not in n.text()
    assert n.stop() == 0
    again = notifier(health.url + "/funding/health", telegram.url)  # a restart, still unhealthy
    polls_pass(health, 30)
    assert telegram.counts[path] == 1
    health.reasons = []
    wait_until(lambda: len(telegram.messages) == 1, 20)  # the recovery is the restarted process's one message
    assert "healthy again" in telegram.messages[0]["text"] and telegram.counts[path] == 2
    assert again.stop() == 0
    assert TOKEN not in n.text()


def test_a_send_that_surely_failed_is_sent_later_exactly_once(tmp_path: Path, health: FakeHealth,
                                                              notifier: Callable[..., Notifier]) -> None:
    port = free_port()
    health.reasons = ["daemon stopped"]
    n = notifier(health.url + "/funding/health", f"http://127.0.0.1:{port}")  # Telegram unreachable at first
    wait_until(lambda: "the message was not sent" in n.text(), 20)
    with FakeTelegram(token=TOKEN, port=port) as telegram:
        wait_until(lambda: telegram.messages, 20)
        polls_pass(health, 30)
        assert len(telegram.messages) == 1 and "UNHEALTHY" in telegram.messages[0]["text"]
    assert n.stop() == 0 and TOKEN not in n.text()


@pytest.mark.parametrize("unset, needle", [("HEALTH_NOTIFY_CHAT_ID", "HEALTH_NOTIFY_CHAT_ID is not set"),
                                           ("TELEGRAM_TOKEN", "TELEGRAM_TOKEN is not set")])
def test_missing_settings_are_one_line_and_exit_2(tmp_path: Path, unset: str, needle: str) -> None:
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "TELEGRAM_TOKEN": TOKEN,
           "HEALTH_NOTIFY_CHAT_ID": "1"}
    env.pop(unset)
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr
    assert TOKEN not in proc.stderr
    usage = " ".join(subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                                    timeout=30).stdout.split())
    assert "Exit codes: 0 stopped" in usage and "1 runtime failure" in usage and "2 bad usage" in usage


def test_an_unwritable_state_file_is_exit_1_at_start(tmp_path: Path, health: FakeHealth) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "VOLSPIKE_ENV_FILE": os.devnull, "TELEGRAM_TOKEN": TOKEN,
           "HEALTH_NOTIFY_CHAT_ID": "1", "HEALTH_NOTIFY_URL": health.url + "/funding/health",
           "HEALTH_NOTIFY_STATE_FILE": str(blocker / "notify.json")}  # a directory that is a file
    proc = subprocess.run([sys.executable, str(SCRIPT), "--once"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and "cannot write the state file" in proc.stderr and "Traceback" not in proc.stderr
