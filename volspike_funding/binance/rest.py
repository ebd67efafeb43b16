"""The one Binance USDⓈ-M REST client of a process: weight-aware, pauses everything on 429/418, bounded retries.

Binance counts request weight per IP and minute (limit 2400), across all our processes, and reports the count in
``X-MBX-USED-WEIGHT-1M``. Past 80 % of the limit calls are spaced out; past 95 % they wait for the next minute.
A 429 pauses every call of the process for ``Retry-After`` (a call during a pause raises at once, sending
nothing); a 418 (IP ban) does the same and logs at ERROR. GETs are retried on 5xx, timeouts and connection errors
with capped exponential backoff; other 4xx are never retried. Thread-safe: the OI poller shares it across a pool.
A pause is never longer than its cap (an unusable ``Retry-After`` such as ``inf`` pauses ``DEFAULT_PAUSE_S``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Mapping

import requests
import requests.adapters

from volspike_funding.core.version import __version__
from volspike_funding.core.errors import IpBanned, RateLimited, RequestRejected, Unavailable
from volspike_funding.core.retry import LONGEST_WAIT_S, Backoff, parse_retry_after

log = logging.getLogger("funding.rest")

WEIGHT_LIMIT_1M = 2400
SLOW_DOWN_AT, WAIT_AT = 0.80, 0.95
DEFAULT_PAUSE_S = 60.0
#: A 429 waits out a rate-limit window (Binance's request weight is counted per minute): 15 windows is plenty.
MAX_429_PAUSE_S = 900.0
#: A 418 lasts until the ban ends, up to Binance's longest (3 days); sending during a ban lengthens it.
MAX_418_PAUSE_S = LONGEST_WAIT_S
#: No answer is read past this: Binance's largest, exchangeInfo, is ~1.2 MB for 924 symbols; a 5 MB one was once
#: accepted whole and cost the daemon 14 MB it never gave back.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class BinanceRest:
    def __init__(self, base_url: str, *, timeout: float = 10.0, retries: int = 3, backoff_s: float = 0.5,
                 backoff_max_s: float = 5.0, session: requests.Session | None = None, pool_size: int = 10,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 max_429_pause_s: float = MAX_429_PAUSE_S, max_418_pause_s: float = MAX_418_PAUSE_S,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.base_url = base_url.rstrip("/")
        self._max_bytes = max_answer_bytes
        self._timeout, self._retries = timeout, retries
        # Half jitter: spreads the OI poller's parallel retries without ever retrying at once.
        self._backoff = Backoff(backoff_s, backoff_max_s, jitter=0.5)
        self._max_pause = {429: max_429_pause_s, 418: max_418_pause_s}
        if session is None:
            # As many pooled connections as parallel callers: with requests' 10, the OI poller's 20 threads had
            # urllib3 log "Connection pool is full" ten times a loop (~8 MB of journal a day) and reconnect.
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        self._session.headers["User-Agent"] = f"volspike-funding/{__version__}"
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._pause_reason: type[RateLimited] = RateLimited
        #: The last ``X-MBX-USED-WEIGHT-1M`` seen and the minute it belongs to.
        self.used_weight = 0
        self._weight_minute = 0
        self.requests_sent = 0
        #: HTTP 429 and 418 answers received (exported through the consumer status file).
        self.rate_limited = self.banned = 0

    # -- pacing ------------------------------------------------------------------------------------------
    def _check_pause(self) -> None:
        with self._lock:
            remaining = self._paused_until - self._clock()
            reason = self._pause_reason
        if remaining > 0:
            raise reason(f"Binance REST paused for another {remaining:.0f} s after a "
                         f"{'418 ban' if reason is IpBanned else '429'}", remaining)

    def _pace(self, weight: int) -> None:
        now = self._clock()
        minute = int(now // 60)
        with self._lock:
            used = self.used_weight if minute == self._weight_minute else 0
        if used + weight >= WAIT_AT * WEIGHT_LIMIT_1M:
            wait = 60 - now % 60 + 0.05
            log.warning("request weight %d/%d used this minute; waiting %.1f s for the next minute", used,
                        WEIGHT_LIMIT_1M, wait)
            self._sleep(wait)
        elif used + weight >= SLOW_DOWN_AT * WEIGHT_LIMIT_1M:
            self._sleep(0.2)

    def _pause(self, kind: type[RateLimited], retry_after: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + retry_after)
            self._pause_reason = kind

    # -- requests ----------------------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any] | None = None, *, weight: int = 1) -> Any:
        """GET a public endpoint and return its decoded JSON, or raise one of the :class:`RestError` kinds."""
        attempt = 0
        while True:
            self._check_pause()
            self._pace(weight)
            try:
                with self._lock:
                    self.requests_sent += 1
                response = self._session.get(self.base_url + path, params=params, timeout=self._timeout,
                                             stream=True)
                body = self._body(response, path)
            except requests.RequestException as exc:  # refused, timed out, or cut off mid-answer
                failure = f"{type(exc).__name__} on {path}"
            else:
                self._note_weight(response)
                if response.status_code < 400:
                    try:
                        return json.loads(body)
                    except ValueError:
                        failure = f"invalid JSON from {path}"
                elif response.status_code in (429, 418):
                    self._rate_limited(response, path)
                elif response.status_code < 500:
                    raise self._rejected(response.status_code, body)
                else:
                    failure = f"HTTP {response.status_code} on {path}"
            if attempt >= self._retries:
                raise Unavailable(f"{failure} (after {attempt + 1} attempts)")
            attempt += 1
            delay = self._backoff.delay(attempt)
            log.warning("%s; retry %d/%d in %.2f s", failure, attempt, self._retries, delay)
            self._sleep(delay)

    def _body(self, response: requests.Response, path: str) -> bytes:
        """The answer's body, read up to ``max_answer_bytes``: a larger one is not read on, nor retried."""
        chunks, size = [], 0
        with response:
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > self._max_bytes:
                    raise Unavailable(f"{path} answered more than {self._max_bytes / 2**20:g} MB; not read")
                chunks.append(chunk)
        return b"".join(chunks)

    def _note_weight(self, response: requests.Response) -> None:
        raw = response.headers.get("X-MBX-USED-WEIGHT-1M")
        if raw and raw.isdigit():
            with self._lock:
                self.used_weight = int(raw)
                self._weight_minute = int(self._clock() // 60)

    def _rate_limited(self, response: requests.Response, path: str) -> None:
        cap = self._max_pause[response.status_code]
        raw = response.headers.get("Retry-After")
        retry_after = parse_retry_after(raw, cap, now=self._clock)
        ignored = f" (unusable Retry-After {raw[:20]!r} ignored)" if raw is not None and retry_after is None else ""
        if retry_after is None:
            retry_after = min(DEFAULT_PAUSE_S, cap)
        with self._lock:
            if response.status_code == 418:
                self.banned += 1
            else:
                self.rate_limited += 1
        if response.status_code == 418:
            self._pause(IpBanned, retry_after)
            log.error("BINANCE IP BAN (HTTP 418) on %s: every REST call paused for %.0f s. Something is sending "
                      "too many requests from this IP; check every process on this host.%s", path, retry_after, ignored)
            raise IpBanned(f"HTTP 418 (IP banned) on {path}; paused {retry_after:.0f} s", retry_after)
        self._pause(RateLimited, retry_after)
        log.warning("HTTP 429 on %s: every REST call paused for %.0f s%s", path, retry_after, ignored)
        raise RateLimited(f"HTTP 429 on {path}; paused {retry_after:.0f} s", retry_after)

    @staticmethod
    def _rejected(status: int, body: bytes) -> RequestRejected:
        try:
            answer = json.loads(body)
            return RequestRejected(status, answer.get("code"), str(answer.get("msg", ""))[:200])
        except (ValueError, AttributeError):
            return RequestRejected(status, None, body[:200].decode("utf-8", "replace"))

    # -- endpoints used by the consumers -------------------------------------------------------------------
    def premium_index_all(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.get("/fapi/v1/premiumIndex", weight=10)
        return answer

    def exchange_info(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/fapi/v1/exchangeInfo", weight=1)
        return answer

    def klines(self, symbol: str, interval: str, limit: int) -> list[list[Any]]:
        answer: list[list[Any]] = self.get("/fapi/v1/klines", {"symbol": symbol, "interval": interval,
                                                               "limit": limit}, weight=1 if limit < 100 else 2)
        return answer

    def open_interest(self, symbol: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/fapi/v1/openInterest", {"symbol": symbol}, weight=1)
        return answer

    def ticker_24hr_all(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.get("/fapi/v1/ticker/24hr", weight=40)
        return answer


def usdt_perpetuals(exchange_info: dict[str, Any]) -> list[str]:
    """Symbols with ``contractType == PERPETUAL``, ``quoteAsset == USDT`` and ``status == TRADING``."""
    return sorted(s["symbol"] for s in exchange_info.get("symbols", [])
                  if s.get("contractType") == "PERPETUAL" and s.get("quoteAsset") == "USDT"
                  and s.get("status") == "TRADING")
