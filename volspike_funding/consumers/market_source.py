"""Klines and 24 h tickers for the consumers from the local service's market feed, REST for what it lacks.

- The volume script in ``ws`` mode asks ``GET /market/klines/batch?limit=n`` once per scan (every kept symbol's
  newest ``n`` 1 h candles, whole or listed as unavailable) and calls REST ``klines`` only for the symbols the
  local answer lacks: 0 REST weight once the daemon's feed is warm, instead of one call per symbol per scan. In
  ``validate`` mode REST decides and the same batch is compared with it: every closed hour both hold, close and
  quote volume (:func:`compare_candles`, in the comparison log beside funding); in ``rest`` mode nothing local.
- The OI poller's universe job takes 24 h quote volumes from ``GET /fapi/v1/ticker/24hr`` on the local service
  (0 instead of 40 weight) unless the mode is ``rest``.

Same manners as the funding client: a short timeout, no retries, and a circuit breaker after a failure; an answer
that is not 200 (the market feed off: 400 ``-1020``; not warm yet: 503 ``-1001``) means REST, said once per change.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import requests

from volspike_funding.core.settings import Settings
from volspike_funding.store.comparison_log import KLINE_CLOSE, KLINE_VOLUME, Comparison, ComparisonLog

log = logging.getLogger("funding.source")

SETTLE_POLL_S = 0.5
SETTLE_MIN_S = 3.0


class LocalMarketClient:
    def __init__(self, funding_api_url: str, *, timeout: float, breaker_s: float,
                 session: requests.Session | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        base = funding_api_url.rstrip("/").removesuffix("/funding")
        self.klines_url = base + "/market/klines/batch"
        self.tickers_url = base + "/fapi/v1/ticker/24hr"
        self._timeout = (timeout * 0.25, timeout * 0.75)
        # A whole universe's candles is ~100 KB: more than a funding batch, still well under a second on loopback.
        self._klines_timeout = (timeout * 0.25, max(timeout, 2.0))
        self._breaker_s = breaker_s
        self._session = session or requests.Session()
        self._clock = clock
        self._open_until = 0.0
        self._last_reason: str | None = None
        self.calls = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> "LocalMarketClient":
        return cls(settings.ws_funding_api_url, timeout=settings.ws_funding_timeout_s,
                   breaker_s=settings.ws_funding_breaker_s)

    def _get(self, url: str, params: dict[str, Any] | None, timeout: tuple[float, float]) -> Any:
        if self._clock() < self._open_until:
            return None
        self.calls += 1
        try:
            response = self._session.get(url, params=params, timeout=timeout)
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            self._open_until = self._clock() + self._breaker_s
            self._said(f"local market data unavailable ({type(exc).__name__}); REST is used, the local service "
                       f"is skipped for {self._breaker_s:g} s")
            return None
        if response.status_code != 200:
            msg = body.get("msg") if isinstance(body, dict) else None
            self._said(f"local market data not usable (HTTP {response.status_code}: {str(msg)[:160]}); REST is used")
            return None
        if self._last_reason is not None:
            log.info("local market data usable again")
            self._last_reason = None
        return body

    def _said(self, reason: str) -> None:
        if reason != self._last_reason:  # once per change: a feed that is off must not log every scan
            log.warning("%s", reason)
            self._last_reason = reason

    def klines(self, limit: int, *, settle_s: float = 0.0, stop: threading.Event | None = None,
               settle_min_s: float = SETTLE_MIN_S) -> dict[str, list[list[Any]]]:
        """Symbol -> its newest ``limit`` rows (Binance's shape) for every symbol the local feed answers whole;
        empty when it cannot answer at all. ``settle_s``: while symbols are held back only because an hour that
        just closed has no final message yet (Binance sends it ~2 s after the close), ask again every
        ``SETTLE_POLL_S`` for up to this long, and past ``settle_min_s`` only while their number shrinks (a symbol
        without trades gets no final message at all: REST answers it); the :00 scan would otherwise ask REST for
        every symbol."""
        started = self._clock()
        deadline, before, stop = started + settle_s, None, stop or threading.Event()
        while True:
            body = self._get(self.klines_url, {"limit": limit}, self._klines_timeout)
            klines = body.get("klines") if isinstance(body, dict) else None
            if not isinstance(klines, dict):
                return {}
            answered = {s: rows for s, rows in klines.items() if isinstance(rows, list) and len(rows) == limit}
            waiting = [s for s, why in (body.get("unavailable") or {}).items()
                       if isinstance(why, str) and "not final yet" in why]
            now = self._clock()
            stalled = before is not None and len(waiting) >= before and now - started >= settle_min_s
            if not waiting or stalled or now >= deadline or stop.wait(SETTLE_POLL_S):
                return answered
            before = len(waiting)

    def quote_volumes(self) -> dict[str, float] | None:
        """24 h quote volume by symbol from the local tickers, or ``None`` (then REST)."""
        body = self._get(self.tickers_url, None, self._klines_timeout)
        if not isinstance(body, list) or not body:
            return None
        volumes: dict[str, float] = {}
        for ticker in body:
            try:
                volumes[ticker["symbol"]] = float(ticker["quoteVolume"])
            except (KeyError, TypeError, ValueError):
                continue
        return volumes or None


def compare_candles(log_: ComparisonLog, local: dict[str, list[list[Any]]],
                    rest: dict[str, list[list[Any]] | None], now: float) -> list[Comparison]:
    """Each closed hour that REST's rows and the local batch both hold, close and quote volume (Binance's twelve
    fields: ``[4]`` close, ``[7]`` quote volume, ``[6]`` close time). The open hour is left out: it grows
    between the two reads. A row that is not numbers is skipped (REST's own check is the decision's)."""
    now_ms = now * 1000
    out: list[Comparison] = []
    for symbol in sorted(local.keys() & rest.keys()):
        theirs = {r[0]: r for r in rest[symbol] or () if isinstance(r, list) and len(r) > 7 and r[6] < now_ms}
        for row in local[symbol]:
            other = theirs.get(row[0]) if isinstance(row, list) and len(row) > 7 else None
            if other is None:
                continue
            try:
                pairs = [(KLINE_CLOSE, float(other[4]), float(row[4])), (KLINE_VOLUME, float(other[7]), float(row[7]))]
            except (TypeError, ValueError):
                continue
            out += [log_.compare(symbol, name, r, w, None) for name, r, w in pairs]
    return out
