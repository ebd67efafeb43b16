"""``funding_health_notifier.py``: tell the operator on Telegram when the funding service breaks, without Prometheus.

It polls ``/funding/health`` (``HEALTH_NOTIFY_URL``). Unhealthy without a healthy answer for
``HEALTH_NOTIFY_AFTER_S`` sends ONE message with the reasons; the first healthy answer after that sends one saying
so. One message per transition, whatever happens between: reasons that change while unhealthy, a flapping check
inside the delay, the API not answering at all (itself unhealthy: "the API does not answer"), a restart.

**At most once.** What was announced is written to ``HEALTH_NOTIFY_STATE_FILE`` (atomically) *before* the message
goes out, so a crash or restart never repeats it. A send that may have arrived (a read timeout, a 5xx after the
body went out) counts as sent; only one that surely did not (the connection was never made, HTTP 429) is undone
and tried again at the next poll. The bot token is in Telegram's URL: it is never logged (nor the URL, nor an
exception's text), and the log filter redacts it anyway.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Any, Callable, Sequence

import requests
import urllib3

from volspike_funding.core.cli import build_parser, run, settings_from_args
from volspike_funding.core.errors import FundingError, SettingsError
from volspike_funding.core.logs import RateLimitedLog, setup_logging
from volspike_funding.core.persist import load_json, save_json
from volspike_funding.core.settings import NOTIFY, Settings, masked, secret_values

log = logging.getLogger("funding.notify")
#: Telegram down while a message waits: retried every poll, logged once a minute (with how often).
_unreachable = RateLimitedLog(log)

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
SENT, UNCERTAIN, NOT_SENT, REJECTED = "sent", "may have arrived", "not sent", "rejected"
CONNECT_TIMEOUT_S = 5.0
POLL_TIMEOUT_S = 10.0
MAX_REASONS, MAX_REASON_CHARS = 10, 300  # a Telegram message holds 4096 characters
EPILOG = ("Exit codes: 0 stopped (SIGTERM, Ctrl-C) or --once done, 1 runtime failure (the state file cannot be "
          "written), 2 bad usage or setting (TELEGRAM_TOKEN or HEALTH_NOTIFY_CHAT_ID unset included). Every flag "
          "mirrors an environment variable; see DEPLOYMENT.md, 'Being told when it breaks'.")


def _why(exc: requests.RequestException, timeout_s: float) -> str:
    """A short cause without the exception's text (it carries the URL, and Telegram's URL carries the token)."""
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    if _surely_not_sent(exc):
        return "connection refused or host unreachable"
    return type(exc).__name__


def _surely_not_sent(exc: requests.RequestException) -> bool:
    """The connection was never made, so nothing was sent (the consumers' sinks judge alike; the layers keep this
    process from importing them)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def probe(session: requests.Session, url: str, timeout_s: float) -> tuple[bool, list[str]]:
    """``(healthy, reasons)`` from one GET of the health endpoint; no usable answer is unhealthy with a reason."""
    try:
        response = session.get(url, timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s),
                               headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        return False, [f"the API does not answer at {url}: {_why(exc, timeout_s)}"]
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    if status not in (HEALTHY, UNHEALTHY):
        return False, [f"the API at {url} answered HTTP {response.status_code} without a health status"]
    if status == HEALTHY and response.status_code == 200:
        return True, []
    reasons = [str(r)[:MAX_REASON_CHARS] for r in (body.get("reasons") or [])]
    return False, reasons or [f"{url} answered HTTP {response.status_code}, status {status}"]


def send_telegram(session: requests.Session, settings: Settings, text: str) -> str:
    """One sendMessage: SENT, UNCERTAIN (may have arrived: done), NOT_SENT (surely not: try again later) or
    REJECTED (done: sending again cannot help)."""
    url = f"{settings.telegram_api_url.rstrip('/')}/bot{settings.telegram_token}/sendMessage"
    timeout_s = settings.telegram_timeout_s
    try:
        response = session.post(url, json={"chat_id": settings.health_notify_chat_id, "text": text},
                                timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s))
    except requests.RequestException as exc:
        if _surely_not_sent(exc):
            _unreachable.warning("Telegram", f"{_why(exc, timeout_s)}; the message was not sent, it is "
                                             "tried again at the next poll")
            return NOT_SENT
        log.warning("Telegram: %s; the message may have arrived, so it is not sent again", _why(exc, timeout_s))
        return UNCERTAIN
    status = response.status_code
    if status < 300:
        return SENT
    if status == 429:  # refused before delivery: nothing arrived
        _unreachable.warning("Telegram", "HTTP 429 (too many requests); the message is tried again at "
                                         "the next poll")
        return NOT_SENT
    if status >= 500:
        log.error("Telegram: HTTP %d after the message was sent; it may have arrived, so it is not sent again",
                  status)
        return UNCERTAIN
    log.error("Telegram rejected the message: HTTP %d %s (check TELEGRAM_TOKEN and HEALTH_NOTIFY_CHAT_ID; not "
              "retried)", status, response.text[:200].replace(settings.telegram_token or "\0", "***"))
    return REJECTED


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


class Notifier:
    """The transitions healthy -> unhealthy (after the delay) -> healthy, each announced once."""

    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self._clock = settings, clock
        self._session = session or requests.Session()
        self._host = socket.gethostname()
        state = load_json(settings.health_notify_state_file, {})
        state = state if isinstance(state, dict) else {}
        self.announced = UNHEALTHY if state.get("announced") == UNHEALTHY else HEALTHY
        since = state.get("unhealthySince")
        self.unhealthy_since: float | None = float(since) if isinstance(since, (int, float)) else None
        self._save()  # fail at start, not at the first message, when the state file cannot be written

    def _save(self) -> None:
        path = self.settings.health_notify_state_file
        try:
            save_json(path, {"announced": self.announced, "unhealthySince": self.unhealthy_since})
        except OSError as exc:
            raise FundingError(f"cannot write the state file {path}: {exc.strerror or exc} (without it a restart "
                               "could repeat a message)") from None

    def step(self) -> None:
        """One poll, and a message if it completes a transition."""
        s = self.settings
        healthy, reasons = probe(self._session, s.health_notify_url, min(POLL_TIMEOUT_S, s.health_notify_interval_s))
        now = self._clock()
        if healthy:
            since, self.unhealthy_since = self.unhealthy_since, None
            if self.announced == UNHEALTHY:
                lasted = f" after {_duration(now - since)}" if since is not None else ""
                self._announce(HEALTHY, f"VolSpike funding on {self._host}: healthy again{lasted}.", since)
            elif since is not None:
                log.info("healthy again after %s (no message: it was unhealthy for less than %g s)",
                         _duration(now - since), s.health_notify_after_s)
                self._save()
            return
        if self.unhealthy_since is None:
            self.unhealthy_since = now
            self._save()
            log.warning("unhealthy: %s; a Telegram message follows if it lasts %g s", "; ".join(reasons),
                        s.health_notify_after_s)
        if self.announced == HEALTHY and now - self.unhealthy_since >= s.health_notify_after_s:
            shown = reasons[:MAX_REASONS] + ([f"... and {len(reasons) - MAX_REASONS} more"]
                                             if len(reasons) > MAX_REASONS else [])
            text = "\n".join([f"VolSpike funding on {self._host}: UNHEALTHY for "
                              f"{_duration(now - self.unhealthy_since)}", *(f"- {r}" for r in shown),
                              f"(from {s.health_notify_url}; one more message when it is healthy again)"])
            self._announce(UNHEALTHY, text, self.unhealthy_since)

    def _announce(self, new: str, text: str, since: float | None) -> None:
        previous, previous_since = self.announced, self.unhealthy_since
        self.announced = new
        self._save()  # before sending: a crash after this line loses the message, never repeats it
        outcome = send_telegram(self._session, self.settings, text)
        if outcome == NOT_SENT:  # surely not delivered: undo, so the next poll sends it
            self.announced = previous
            self.unhealthy_since = previous_since if new == UNHEALTHY else since
            self._save()
        elif outcome == SENT:
            log.info("posted to Telegram: %s", text.splitlines()[0])

    def run(self, stop: threading.Event, once: bool = False) -> None:
        while True:
            self.step()
            if once or stop.wait(self.settings.health_notify_interval_s):
                return


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser("funding_health_notifier",
                          "Poll /funding/health; one Telegram message when it has been unhealthy for "
                          "HEALTH_NOTIFY_AFTER_S, one when it is healthy again.", NOTIFY)
    parser.epilog = EPILOG
    parser.add_argument("--once", action="store_true", help="poll once (a timer's run), then exit")

    def body() -> int:
        args = parser.parse_args(argv)
        settings = settings_from_args(args, NOTIFY)
        if not settings.telegram_token:
            raise SettingsError("TELEGRAM_TOKEN is not set: the notifier has nowhere to send")
        if not settings.health_notify_chat_id:
            raise SettingsError("HEALTH_NOTIFY_CHAT_ID is not set: name the chat for health messages")
        setup_logging(settings.log_level, secret_values(settings))
        notifier = Notifier(settings)
        log.info("polling %s every %g s; a message after %g s unhealthy, to Telegram chat %s (token %s); "
                 "announced so far: %s", settings.health_notify_url, settings.health_notify_interval_s,
                 settings.health_notify_after_s, settings.health_notify_chat_id, masked(settings.telegram_token),
                 notifier.announced)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: stop.set())
        notifier.run(stop, once=args.once)
        return 0

    return run("funding_health_notifier", body)
