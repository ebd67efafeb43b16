"""Where alerts go: the VolSpike backends (PROD and DEV, independently) and Telegram, each through its own outbox.

**At most once.** A POST that may have reached its receiver is never sent again: after a read timeout or a 5xx the
backend may have stored it (it keeps processing after the client gave up — three copies of one alert were seen),
so the outcome is ``uncertain`` and the caller treats it as delivered. Only what surely did not arrive is retried,
a bounded number of times: a refused or unreachable connection, a connect timeout, and 429/503 with
``Retry-After`` (Telegram: ``parameters.retry_after``). Other 4xx are ``rejected`` (sending again cannot help).

**Isolation.** Every receiver has an :class:`Outbox`: its own bounded queue and thread, so a hung or slow DEV,
PROD or Telegram delays only itself. Secrets never reach a log (and the log filter redacts them anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import requests
import urllib3

from volspike_funding.core.logs import RateLimitedLog
from volspike_funding.core.retry import Backoff, parse_retry_after
from volspike_funding.core.settings import Settings, masked
from volspike_funding.store import consumer_status

log = logging.getLogger("funding.sinks")

ACCEPTED, REJECTED, UNCERTAIN = "accepted", "rejected", "uncertain"
ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5.0
#: A Retry-After longer than this is not waited for (the POST is given up as rejected: it surely did not arrive).
MAX_RETRY_AFTER_S = 30.0


#: The waits between attempts that surely did not arrive: 1 s, then 2 s (no jitter: one sender per receiver).
WAITS = Backoff(1.0, 2.0)


def _retry_after(response: requests.Response) -> float | None:
    raw: Any = response.headers.get("Retry-After")
    if raw is None and response.headers.get("content-type", "").startswith("application/json"):
        try:  # Telegram: {"ok": false, "error_code": 429, "parameters": {"retry_after": 3}}
            raw = response.json().get("parameters", {}).get("retry_after")
        except (ValueError, AttributeError):
            raw = None
    if not isinstance(raw, (str, int, float)):
        return None
    return parse_retry_after(raw, MAX_RETRY_AFTER_S, clamp=False)  # longer: given up, not waited for


def _surely_not_sent(exc: requests.RequestException) -> bool:
    """The connection was never made (refused, no route, name not resolved, connect timeout): nothing was sent.
    Anything later (a read timeout, "connection aborted" after the body went out) may have arrived."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def deliver(session: requests.Session, name: str, url: str, what: str, *, json: Any, headers: Mapping[str, str],
            timeout_s: float, sleep: Callable[[float], None] = time.sleep) -> str:
    """POST once (plus retries of what surely did not arrive); returns ACCEPTED, REJECTED or UNCERTAIN."""
    problem = ""
    for attempt in range(1, ATTEMPTS + 1):
        wait = WAITS.delay(attempt)
        try:
            response = session.post(url, json=json, headers=dict(headers),
                                    timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s))
        except requests.RequestException as exc:
            if not _surely_not_sent(exc):
                log.warning("%s %s: %s; it may have arrived, so it is not sent again", name, what,
                            "no answer within %g s" % timeout_s if isinstance(exc, requests.Timeout)
                            else type(exc).__name__)
                return UNCERTAIN
            problem = f"{type(exc).__name__} before anything was sent"
        else:
            status = response.status_code
            if status < 300:
                return ACCEPTED
            retry_after = _retry_after(response) if status in (429, 503) else None
            if retry_after is not None:
                problem, wait = f"HTTP {status}, Retry-After {retry_after:g} s", retry_after
            elif status >= 500:
                log.error("%s %s: HTTP %d after the body was sent; it may have been stored, so it is not sent "
                          "again", name, what, status)
                return UNCERTAIN
            else:
                log.error("%s rejected %s: HTTP %d %s (not retried)", name, what, status, response.text[:200])
                return REJECTED
        if attempt < ATTEMPTS:
            log.warning("%s %s: %s; attempt %d/%d, retrying in %.1f s", name, what, problem, attempt, ATTEMPTS, wait)
            sleep(wait)
    log.error("%s %s failed after %d attempts (%s)", name, what, ATTEMPTS, problem)
    return REJECTED


class Backend:
    def __init__(self, name: str, url: str, api_key: str | None, *, session: requests.Session | None = None,
                 timeout: float = 10.0, batch_timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.url = name, url.rstrip("/")
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self.key_hint = masked(api_key)
        self._session = session or requests.Session()
        self.timeout, self.batch_timeout, self._sleep = timeout, batch_timeout, sleep
        self.outcomes: dict[str, int] = {ACCEPTED: 0, REJECTED: 0, UNCERTAIN: 0}

    def __repr__(self) -> str:
        return f"{self.name} {self.url} (key {self.key_hint})"

    def post(self, path: str, payload: Mapping[str, Any], *, timeout: float | None = None, what: str = "") -> str:
        """POST JSON once (see :func:`deliver`); logs ``posted to NAME: ...`` when accepted."""
        outcome = deliver(self._session, self.name, self.url + path, what or path, json=payload,
                          headers=self._headers, timeout_s=timeout or self.timeout, sleep=self._sleep)
        self.outcomes[outcome] += 1
        if outcome == ACCEPTED and what:
            log.info("posted to %s: %s", self.name, what)
        return outcome

    def get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        """One GET (no retries); ``None`` on any failure."""
        try:
            response = self._session.get(self.url + path, params=params, headers=self._headers,
                                         timeout=(CONNECT_TIMEOUT_S, self.timeout))
            if response.status_code == 200:
                return response.json()
            log.warning("%s GET %s: HTTP %d", self.name, path, response.status_code)
        except (requests.RequestException, ValueError) as exc:
            log.warning("%s GET %s failed: %s", self.name, path, type(exc).__name__)
        return None


def backends_from(settings: Settings, **kw: Any) -> list[Backend]:
    """PROD when ``VOLSPIKE_API_URL`` and its key are set, DEV when ``VOLSPIKE_API_URL_DEV`` and its key are set. A
    backend with a URL but no key is not used (every POST would be answered 401): one warning, at start."""
    configured = [("PROD", settings.volspike_api_url, settings.volspike_api_key, "VOLSPIKE_API_KEY"),
                  ("DEV", settings.volspike_api_url_dev, settings.volspike_api_key_dev, "VOLSPIKE_API_KEY_DEV")]
    backends = []
    for name, url, key, key_env in configured:
        if url:
            if not key:
                log.warning("%s backend %s is not used: %s is empty (it would answer 401)", name, url, key_env)
                continue
            backends.append(Backend(name, url, key, timeout=settings.volspike_post_timeout_s,
                                    batch_timeout=settings.oi_batch_timeout_s, **kw))
    return backends


class Telegram:
    def __init__(self, api_url: str, token: str | None, chat_id: str | None, *,
                 session: requests.Session | None = None, timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.enabled = bool(token and chat_id)
        self.name = "Telegram"
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._chat_id = chat_id
        self._session = session or requests.Session()
        self._timeout, self._sleep = timeout, sleep
        self.outcomes: dict[str, int] = {ACCEPTED: 0, REJECTED: 0, UNCERTAIN: 0}

    def send(self, text: str) -> str:
        if not self.enabled:
            return REJECTED
        outcome = deliver(self._session, "Telegram", self._url, "sendMessage", json={"chat_id": self._chat_id,
                          "text": text}, headers={}, timeout_s=self._timeout, sleep=self._sleep)
        self.outcomes[outcome] += 1
        if outcome == ACCEPTED:
            log.info("posted to Telegram: %s", text.splitlines()[0][:80] if text else "")
        return outcome


class Outbox:
    """One receiver's bounded queue and thread. A full queue drops its oldest job (``on_drop`` is told, and a
    dropped job was never sent, so retrying it later is safe)."""

    def __init__(self, name: str, maxlen: int) -> None:
        self.name = name
        self._jobs: deque[tuple[Callable[[], object], Callable[[], None] | None]] = deque()
        self._maxlen = maxlen
        self._cv = threading.Condition()
        self._busy = False
        self._stop = False
        self.done = self.dropped = 0
        self._ratelog = RateLimitedLog(log, 60.0)
        self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)
        self._thread.start()

    def put(self, job: Callable[[], object], on_drop: Callable[[], None] | None = None) -> None:
        with self._cv:
            if len(self._jobs) >= self._maxlen:
                _, dropped = self._jobs.popleft()
                self.dropped += 1
                self._ratelog.warning(f"drop-{self.name}", f"{self.name} is slow: its queue is full "
                                                           f"({self._maxlen}); the oldest job was dropped")
                if dropped is not None:
                    dropped()
            self._jobs.append((job, on_drop))
            self._cv.notify_all()

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._jobs) + self._busy

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if not self._jobs:
                    return
                job, _ = self._jobs.popleft()
                self._busy = True
            try:
                job()
            except Exception:  # one broken job must not end this receiver's deliveries
                log.exception("%s: delivery job failed", self.name)
            finally:
                with self._cv:
                    self._busy = False
                    self.done += 1
                    self._cv.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued was handled (``--once`` exits after this); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to ``timeout``), then stop."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)

    def close_by(self, deadline: float) -> int:
        """Send what is queued until ``deadline`` (monotonic), then drop the rest unsent (``on_drop`` is told);
        returns how many were dropped. A job in progress is left to its thread (it may have arrived)."""
        self.close(max(0.0, deadline - time.monotonic()))
        with self._cv:
            left = list(self._jobs)
            self._jobs.clear()
            self.dropped += len(left)
        for _, on_drop in left:
            if on_drop is not None:
                on_drop()
        return len(left)


def report_status(state_file: Path, consumer: str, rest: Any, receivers: Iterable[Any],
                  outboxes: Iterable[Outbox]) -> None:
    """A consumer's status after a scan or loop: its REST client's counts, its receivers' delivery outcomes."""
    consumer_status.write(consumer_status.status_path(state_file, consumer), consumer,
                          {"requests": rest.requests_sent, "rateLimited": rest.rate_limited, "banned": rest.banned},
                          delivery_counts(list(receivers), list(outboxes)))


def delivery_counts(receivers: list[Any], outboxes: list[Outbox]) -> dict[str, int]:
    """Outcomes of every receiver's POSTs, and the jobs dropped unsent: for the consumer status file."""
    counts = {"accepted": 0, "rejected": 0, "uncertain": 0, "dropped": sum(o.dropped for o in outboxes)}
    for receiver in receivers:
        for outcome, n in getattr(receiver, "outcomes", {}).items():
            counts[outcome] += n
    return counts
