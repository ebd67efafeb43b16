"""Which symbols the OI poller polls: the backend's liquid universe, or one computed locally with hysteresis; and
the publication of that universe to the backends, which only this job writes.

The last good universe is kept when a refresh fails, comes back empty, or collapses to under half its size
(a broken upstream answer is likelier than half the market delisting at once). The same rule guards publishing:
``POST /api/market/open-interest/liquid-universe/update`` deletes every symbol not in the update, so an empty or
collapsed universe is logged and never sent.

The rules (the original ``oi_liquid_universe_job.py``): USDT perpetuals in TRADING status; a symbol enters at
``OI_LIQUID_ENTER_QUOTE_24H`` of 24 h quote volume and stays while at least ``OI_LIQUID_EXIT_QUOTE_24H``,
hysteresis against the backend's current universe.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from volspike_funding.consumers.sinks import Backend
from volspike_funding.binance.rest import BinanceRest, usdt_perpetuals
from volspike_funding.core.errors import RestError
from volspike_funding.core.settings import Settings

log = logging.getLogger("oi.universe")
COLLAPSE_RATIO = 0.5


class Universe:
    def __init__(self, settings: Settings, rest: BinanceRest, backend: Backend | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 exchange_info: Callable[[], dict[str, Any]] | None = None,
                 local_volumes: Callable[[], dict[str, float] | None] | None = None) -> None:
        self.settings, self.rest, self.backend, self._clock = settings, rest, backend, clock
        #: 24 h quote volumes from the local tickers (0 weight), when the funding mode allows; else REST (40).
        self.local_volumes = local_volumes
        #: Where exchangeInfo comes from: the funding source's (local copy first), or REST.
        self._exchange_info = exchange_info or rest.exchange_info
        self.symbols: list[str] = []
        self.source = "none"
        self._local: set[str] = set()
        self._refreshed = float("-inf")
        self._published = float("-inf")
        #: Size of the last universe sent to the backends (the collapse guard's reference).
        self.last_published = 0
        #: 24 h quote volume of the last local computation, for the published body.
        self.volumes: dict[str, float] = {}

    def due(self) -> bool:
        return not self.symbols or self._clock() - self._refreshed >= self.settings.oi_universe_refresh_s

    def refresh(self) -> list[str]:
        self._refreshed = self._clock()
        fresh, source = self._from_backend(), "backend"
        if fresh is None:
            fresh, source = self._computed(), "computed locally"
        fresh = sorted(fresh or [])
        if not fresh:
            log.warning("universe refresh gave nothing; keeping %d symbols", len(self.symbols))
        elif self.symbols and len(fresh) < COLLAPSE_RATIO * len(self.symbols):
            log.warning("universe refresh collapsed from %d to %d symbols (%s); keeping the last good one",
                        len(self.symbols), len(fresh), source)
        else:
            if fresh != self.symbols:
                log.info("universe: %d symbols (%s)", len(fresh), source)
            self.symbols, self.source = fresh, source
        return self.symbols

    def _from_backend(self) -> list[str] | None:
        if self.backend is None:
            return None
        body = self.backend.get_json("/api/market/open-interest/liquid-universe", {})
        try:
            symbols = [str(item["symbol"]) for item in body["symbols"]]
        except (KeyError, TypeError):
            return None
        return symbols or None

    def adopt(self, symbols: list[str]) -> None:
        """Poll what was just computed and published: the backend's copy may not have it yet (its update is
        queued in an outbox), and reading it back would poll the previous universe for another refresh period."""
        self.symbols, self.source, self._refreshed = sorted(symbols), "published", self._clock()

    def publish_due(self) -> bool:
        interval = self.settings.oi_universe_publish_s
        return bool(interval) and self.backend is not None and self._clock() - self._published >= interval

    def publication(self, now_iso: str) -> dict[str, Any] | None:
        """The update body (hysteresis against the backend's current universe), or ``None`` when it must not be
        sent (nothing computed, empty, or collapsed to under half of the last one sent or of the current one)."""
        self._published = self._clock()
        current = set(self._from_backend() or ())
        self._local |= current  # "stay" applies to what the backend already lists
        fresh = self._computed()
        if not fresh:
            log.warning("liquid universe not published: nothing could be computed (Binance unavailable?)")
            return None
        reference = max(self.last_published, len(current))
        if len(fresh) < COLLAPSE_RATIO * reference:
            log.warning("liquid universe not published: %d symbols is under half of %d (a broken upstream answer "
                        "is likelier than half the market leaving)", len(fresh), reference)
            return None
        self.last_published = len(fresh)
        return {"symbols": [{"symbol": sym, "quoteVolume24h": self.volumes.get(sym, 0.0),
                             "enteredAt": None if sym in current else now_iso, "lastSeenAt": now_iso}
                            for sym in fresh], "updatedAt": now_iso}

    def _computed(self) -> list[str] | None:
        s = self.settings
        try:
            perpetuals = set(usdt_perpetuals(self._exchange_info()))
            volumes = (self.local_volumes() if self.local_volumes is not None else None) or {
                t["symbol"]: float(t.get("quoteVolume") or 0) for t in self.rest.ticker_24hr_all()}
        except (RestError, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot compute the universe locally: %s", exc)
            return None
        self._local = {sym for sym in perpetuals
                       if volumes.get(sym, 0.0) >= s.oi_liquid_enter_quote_24h
                       or (sym in self._local and volumes.get(sym, 0.0) >= s.oi_liquid_exit_quote_24h)}
        self.volumes = {sym: volumes.get(sym, 0.0) for sym in self._local}
        return sorted(self._local)
