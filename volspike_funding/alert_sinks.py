"""Where alerts go: the VolSpike backends (PROD and DEV, independently) and Telegram. Secrets never reach a log.

A POST is retried a bounded number of times on 5xx, timeouts and connection errors, never on other 4xx (the
backend rejected the payload: sending it again cannot help). Telegram's URL contains the bot token, so errors are
logged by type and status only.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

import requests

from .settings import Settings, masked

log = logging.getLogger("funding.sinks")


class Backend:
    def __init__(self, name: str, url: str, api_key: str | None, *, session: requests.Session | None = None,
                 timeout: float = 10.0, attempts: int = 3, retry_delay_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.url = name, url.rstrip("/")
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self.key_hint = masked(api_key)
        self._session = session or requests.Session()
        self._timeout, self._attempts, self._retry_delay_s, self._sleep = timeout, attempts, retry_delay_s, sleep

    def __repr__(self) -> str:
        return f"{self.name} {self.url} (key {self.key_hint})"

    def post(self, path: str, payload: Mapping[str, Any]) -> bool:
        """POST JSON; ``True`` once the backend accepted it."""
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._session.post(self.url + path, json=payload, headers=self._headers,
                                              timeout=self._timeout)
            except requests.RequestException as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500:
                    log.error("%s rejected %s: %s (not retried)", self.name, path, problem)
                    return False
            if attempt < self._attempts:
                log.warning("%s %s failed (%s); attempt %d/%d, retrying in %.1f s", self.name, path, problem,
                            attempt, self._attempts, self._retry_delay_s * attempt)
                self._sleep(self._retry_delay_s * attempt)
        log.error("%s %s failed after %d attempts (%s)", self.name, path, self._attempts, problem)
        return False

    def get_json(self, path: str, params: Mapping[str, Any]) -> Any:
        """One GET (no retries); ``None`` on any failure."""
        try:
            response = self._session.get(self.url + path, params=params, headers=self._headers,
                                         timeout=self._timeout)
            if response.status_code == 200:
                return response.json()
            log.warning("%s GET %s: HTTP %d", self.name, path, response.status_code)
        except (requests.RequestException, ValueError) as exc:
            log.warning("%s GET %s failed: %s", self.name, path, type(exc).__name__)
        return None


def backends_from(settings: Settings, **kw: Any) -> list[Backend]:
    """PROD when ``VOLSPIKE_API_URL`` is set, DEV when ``VOLSPIKE_API_URL_DEV`` is set."""
    configured = [("PROD", settings.volspike_api_url, settings.volspike_api_key),
                  ("DEV", settings.volspike_api_url_dev, settings.volspike_api_key_dev)]
    backends = []
    for name, url, key in configured:
        if url:
            if not key:
                log.warning("%s backend %s has no API key: it will answer 401", name, url)
            backends.append(Backend(name, url, key, **kw))
    return backends


class Telegram:
    def __init__(self, api_url: str, token: str | None, chat_id: str | None, *,
                 session: requests.Session | None = None, timeout: float = 10.0, attempts: int = 3,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.enabled = bool(token and chat_id)
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self._chat_id = chat_id
        self._session = session or requests.Session()
        self._timeout, self._attempts, self._sleep = timeout, attempts, sleep

    def send(self, text: str) -> bool:
        if not self.enabled:
            return False
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._session.post(self._url, json={"chat_id": self._chat_id, "text": text},
                                              timeout=self._timeout)
                if response.status_code == 200:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            except requests.RequestException as exc:
                problem = type(exc).__name__  # the exception's text would contain the bot token
            if attempt < self._attempts:
                self._sleep(attempt)
        log.error("Telegram sendMessage failed: %s", problem)
        return False
