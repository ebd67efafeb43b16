"""Keeps Binance's reference data fresh from a thread of its own, so no REST call can ever delay the stream.

Every ``FUNDING_REFERENCE_REFRESH_S`` (15 min): ``GET /fapi/v1/exchangeInfo`` (weight 1) and
``GET /fapi/v1/fundingInfo`` (weight 0); every ``FUNDING_INTEREST_REFRESH_S`` (1 h): one bulk
``GET /fapi/v1/premiumIndex`` (weight 10) for ``interestRate``, which the stream lacks. That is 14 weight an hour;
an early exchangeInfo refresh (a symbol the stream sends that exchangeInfo does not list yet: a new listing) is
asked for at once. Binance's stream shows a new listing before exchangeInfo does, so while the stream keeps
sending symbols exchangeInfo lacks, early refreshes follow at 1/30 of the interval (30 s), doubling up to 2/3 of
it (10 min): a listing is served within about twice exchangeInfo's lag (once, a fixed 10-minute wait made that up
to 9.7 min), and a symbol exchangeInfo never lists costs about 6 more weight an hour (``bench/bench_reference.py``).

At start only what is older than its interval is fetched, so a daemon restarting in a loop costs no weight.
A failure keeps the last good data and retries with backoff (1 min, doubling, up to the interval); every result
goes to ``on_result`` on the daemon's own queue, where the main loop writes the file and uses the data.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from typing import Any, Callable, Collection

import orjson

from volspike_funding.store import reference
from volspike_funding.binance.rest import BinanceRest
from volspike_funding.core.logs import RateLimitedLog
from volspike_funding.core.errors import RateLimited, RestError
from volspike_funding.core.retry import Backoff
from volspike_funding.store.reference import ReferenceData
from volspike_funding.core.settings import Settings

log = logging.getLogger("funding.reference")

#: Early refreshes while the stream sends unlisted symbols: the first at once, then this share of the interval,
#: doubling up to ``EARLY_CAP_SHARE`` of it; a streak ends once an answer lists every symbol asked about.
EARLY_BASE_SHARE = 1 / 30
EARLY_CAP_SHARE = 2 / 3
RETRY_INITIAL_S = 60.0
#: An exchangeInfo with fewer than this share of the previous copy's symbols is not believed (kept, logged).
COLLAPSE_SHARE = 0.5
#: A symbol one answer no longer lists is kept (the previous copy's entry) until a second answer, this long
#: later at the latest, agrees: a 60 % answer once dropped 244 of 611 symbols for 10 minutes.
RECHECK_S = 60.0


class ReferenceFetcher:
    def __init__(self, rest: BinanceRest, current: ReferenceData, on_result: Callable[[ReferenceData, str | None], None],
                 *, refresh_s: float, interest_refresh_s: float, clock: Callable[[], float] = time.time,
                 retry_initial_s: float = RETRY_INITIAL_S) -> None:
        self._rest, self.data, self._on_result = rest, current.with_(refresh_interval_s=refresh_s), on_result
        self._refresh_s, self._interest_s = refresh_s, interest_refresh_s
        self._clock = clock
        self._early_wait = Backoff(refresh_s * EARLY_BASE_SHARE, refresh_s * EARLY_CAP_SHARE)
        #: Symbols the stream sent that exchangeInfo did not list, asked about in the current streak.
        self._asked: frozenset[str] = frozenset()
        # No jitter: one fetcher per host, and its waits (1 min, doubling, up to the interval) are documented.
        self._backoff = Backoff(min(retry_initial_s, refresh_s), refresh_s)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._early = False
        self._last_early = float("-inf")
        self._failures = 0
        self._retry_at = 0.0
        self._ratelog = RateLimitedLog(log, 600.0)
        #: Symbols the last answer no longer listed, kept until a second one agrees (replaced whole: any thread
        #: may read it).
        self.unconfirmed: frozenset[str] = frozenset()
        self._recheck_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="reference-fetch", daemon=True)

    @classmethod
    def for_settings(cls, settings: Settings, current: ReferenceData,
                     on_result: Callable[[ReferenceData, str | None], None]) -> "ReferenceFetcher":
        """The daemon's fetcher: its own REST client (one retry: the next refresh is the real retry)."""
        rest = BinanceRest(settings.binance_rest_url, timeout=settings.binance_rest_timeout_s, retries=1)
        return cls(rest, current, on_result, refresh_s=settings.reference_refresh_s,
                   interest_refresh_s=settings.interest_refresh_s)

    def start(self) -> "ReferenceFetcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def request_refresh(self, why: str, symbols: Collection[str] = ()) -> bool:
        """Ask for an early exchangeInfo fetch (safe from any thread), at once or after the streak's backoff;
        ``symbols``: the unlisted symbols that prompted it (an answer listing them all ends the streak)."""
        now = self._clock()
        if now - self._last_early > 2 * self._early_wait.cap:  # a streak long over: the next one starts afresh
            self._asked, self._early_wait.failures = frozenset(), 0
        if now - self._last_early < self._early_wait.ceiling():
            return False
        self._last_early = now
        self._early_wait.failures += 1
        self._asked = self._asked | frozenset(symbols)
        self._early = True
        log.info("reference data: early refresh (%s)", why)
        self._wake.set()
        return True

    def _due(self, at: float | None, interval: float, now: float) -> bool:
        return at is None or now - at >= interval

    def _next_wake(self, now: float) -> float:
        d = self.data
        times = [(d.exchange_info_at or 0) + self._refresh_s, (d.funding_info_at or 0) + self._refresh_s,
                 (d.interest_rates_at or 0) + self._interest_s]
        if self._recheck_at is not None:
            times.append(self._recheck_at)
        return max(0.0, min(max(min(times), self._retry_at) - now, self._refresh_s))

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            if now >= self._retry_at:
                self._fetch_due(now)
            self._wake.wait(self._next_wake(self._clock()))
            self._wake.clear()

    def _fetch_due(self, now: float) -> None:
        d = self.data
        changed: dict[str, Any] = {}
        try:
            recheck = self._recheck_at is not None and now >= self._recheck_at
            if self._early or recheck or self._due(d.exchange_info_at, self._refresh_s, now):
                self._early, self._recheck_at = False, None
                info = self._rest.exchange_info()
                changed.update(exchange_info=self._checked(info), exchange_info_at=self._clock())
                if self._asked and self._asked <= set(reference.symbol_index(info)):
                    self._asked, self._early_wait.failures = frozenset(), 0
            if self._due(d.funding_info_at, self._refresh_s, now):
                funding = self._rest.get("/fapi/v1/fundingInfo", weight=0)
                if not isinstance(funding, list):
                    raise RestError(f"fundingInfo is {type(funding).__name__}, not a list")
                changed.update(funding_info=funding, funding_info_at=self._clock())
            if self._due(d.interest_rates_at, self._interest_s, now):
                rates = reference.interest_rates(self._rest.premium_index_all())
                # The attempt is recorded even if no rate came back: otherwise it would be due again at once,
                # and this weight-10 call would run in a loop.
                changed.update(interest_rates=rates or d.interest_rates, interest_rates_at=self._clock())
                if not rates:
                    self._ratelog.warning("interest_rates", "premiumIndex carried no interestRate; keeping the "
                                                            "last known rates until the next hourly refresh")
        except RestError as exc:
            self._failures += 1
            delay = self._backoff.delay(self._failures)
            if isinstance(exc, RateLimited):
                delay = max(delay, exc.retry_after)
            self._retry_at = self._clock() + delay
            self._ratelog.warning("reference_fetch", f"reference data refresh failed ({exc}); keeping the last "
                                                     f"good copy, next try in {delay:.0f} s")
            if changed:
                self.data = self.data.with_(**changed)
            self._on_result(self.data, f"{exc}")
            return
        self._failures, self._retry_at = 0, 0.0
        if changed:
            self.data = self.data.with_(**changed)
            self._on_result(self.data, None)

    def _checked(self, info: object) -> bytes:
        """exchangeInfo as JSON text, once it looks like one and has not collapsed."""
        if not isinstance(info, dict) or not isinstance(info.get("symbols"), list) or not info["symbols"]:
            raise RestError("exchangeInfo without a symbols list")
        before, after = len(self.data.symbols), len(reference.symbol_index(info))
        if not after or (before and after < COLLAPSE_SHARE * before):
            raise RestError(f"exchangeInfo collapsed from {before} to {after} symbols; not believed")
        return orjson.dumps(self._corroborated(info))

    def _corroborated(self, info: dict[str, Any]) -> dict[str, Any]:
        """``info`` plus the previous copy's entries of symbols it no longer lists, unless the previous answer
        already lacked them too (then they are dropped: two answers agree)."""
        listed = set(reference.symbol_index(info))
        missing = set(self.data.symbols) - listed
        confirmed, self.unconfirmed = missing & self.unconfirmed, frozenset(missing - self.unconfirmed)
        if confirmed:
            log.info("reference data: %d symbols delisted (two answers agree): %s", len(confirmed),
                     ", ".join(sorted(confirmed)[:20]))
        if not self.unconfirmed:
            return info
        self._recheck_at = self._clock() + min(RECHECK_S, self._refresh_s)
        log.warning("reference data: exchangeInfo no longer lists %d symbols (%s); kept until a second answer "
                    "agrees, in %.0f s", len(self.unconfirmed), ", ".join(sorted(self.unconfirmed)[:10]),
                    min(RECHECK_S, self._refresh_s))
        entries = {e["symbol"]: e for e in orjson.loads(self.data.exchange_info or b"{}").get("symbols", ())
                   if isinstance(e, dict) and e.get("symbol") in self.unconfirmed}
        return {**info, "symbols": [*info["symbols"], *entries.values()]}


def release_memory() -> None:
    """Hand the memory of a reference refresh (~1 MB of JSON parsed into objects, then dropped) back to the OS: a few
    times an hour, so the daemon's resident size stays that of its steady state (bench/bench_daemon_resources.py)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the memory is reused by the next refresh instead
